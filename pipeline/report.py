"""``onepass report``: offline pages an inspector can work in (no server, no external scripts or fonts).

``REPORT/index.html``
    every source with its figures (duration, windows, words, speakers, talk time per speaker,
    status, errors), one search box over the transcripts, captions and answers of all sources
    (each match links to the page at that moment: ``<id>.html#t=MS``), and every flagged answer.
``REPORT/<id>.html``
    a time scrubber over the source that shows the kept frame at that second with its caption and
    highlights the transcript line and speaker turn under the cursor; clicking a line, a turn or a
    frame moves it there, and a line plays its span of audio; the answers to ``--ask`` questions
    per window with their frame and a filter for the flagged ones; the metadata. Live or stopped
    streams are shown with the windows committed so far.
``REPORT/<id>_files/``
    every kept frame as a small JPEG and an Opus/WebM audio proxy (made with PyAV); a page without
    them (media moved or unreadable) still shows its text.
``REPORT/answers.csv``
    every answer, with ``flagged``, ``confidence`` and ``low_confidence`` columns, for a work-order
    system. Rows the model wrote with low confidence (mean token log-probability under -1) are
    marked "low confidence" on the pages too; markers of media outside the model's domain
    ("[other speech]") and unsupported questions are never flagged.

Each page carries its rows as JSON in a ``<script type="application/json">`` block; the small
script below renders and drives it.
"""

from __future__ import annotations

import csv
import html
import json
from fractions import Fraction
from pathlib import Path

from onepass.operators.audio import RATE_HZ
from onepass.operators.spans import ms_to_clock_tenths

from .telemetry import EDGE_MS, MAX_GAP_MS
from .writers import connect, is_flagged

__all__ = ["write_reports", "is_flagged"]

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
THUMB_PX = 320  # longest side of a frame JPEG

CSS = """
body{font-family:system-ui,sans-serif;margin:20px;color:#222;background:#fafafa}
h1{font-size:21px;margin:6px 0} h2{font-size:16px;margin:22px 0 8px}
a{color:#1a5fb4} .muted{color:#666;font-size:13px} .error{color:#b00}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;font-size:12px;background:#ddd;margin-left:8px}
.badge.live{background:#c7f0c7} .badge.stopped{background:#f4e1a8} .badge.error{background:#f5c2c2}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 10px;text-align:left;border-bottom:1px solid #e4e4e4}
#stage{display:flex;gap:18px;align-items:flex-start;flex-wrap:wrap}
#view{width:480px} #view img{width:480px;display:block;border:1px solid #ccc;background:#000;min-height:40px}
#caption{font-size:15px;margin:6px 0} #clock{font-family:monospace}
#scrubber{width:100%}
.timeline{position:relative;height:24px;background:#e8e8e8;border-radius:4px;margin:6px 0}
.turn{position:absolute;top:3px;height:18px;border-radius:3px;opacity:.6;cursor:pointer}
.turn.current{opacity:1;outline:2px solid #222}
.line{cursor:pointer;padding:3px 6px;border-left:6px solid #999;margin:2px 0;background:#fff}
.line:hover{background:#eef} .line.current{background:#ffe9a8}
.time{font-family:monospace;color:#555;margin-right:8px}
#transcript{max-height:360px;overflow-y:auto;flex:1;min-width:320px}
.strip{display:flex;gap:4px;overflow-x:auto;padding:4px 0}
.strip img{height:54px;cursor:pointer;border:2px solid transparent} .strip img.current{border-color:#e6550d}
.answer{display:flex;gap:10px;align-items:flex-start;padding:4px;background:#fff;margin:3px 0}
.answer img{width:120px} .answer.flagged{border-left:5px solid #e6550d}
.low{opacity:.6} .lowtag{font-size:11px;color:#b35806;border:1px solid #b35806;border-radius:3px;padding:0 3px;margin-left:4px}
#results div{padding:2px 0}
.finding{display:flex;gap:10px;align-items:flex-start;padding:6px;background:#fff;margin:4px 0;border-left:5px solid #e6550d}
.finding img{width:160px} .pos{font-family:monospace;color:#555;font-size:12px}
#track{border:1px solid #ccc;background:#fff} #track .path{fill:none;stroke:#1a5fb4;stroke-width:2}
#track .here{fill:#e6550d;stroke:#fff;stroke-width:2} #track .mark{fill:#e6550d;opacity:.6}
"""

SOURCE_SCRIPT = """
const D=JSON.parse(document.getElementById('data').textContent);
const $=id=>document.getElementById(id);
const clock=ms=>{ms=Math.max(0,Math.round(ms));const s=Math.floor(ms/1000);
  return String(Math.floor(s/60)).padStart(2,'0')+':'+String(s%60).padStart(2,'0')+'.'+Math.floor(ms%1000/100);};
function frameAt(t){let f=null;for(const x of D.frames){if(x.ms<=t)f=x;else break;}return f||D.frames[0]||null;}
function seek(t){
  t=Math.max(0,Math.min(D.duration_ms,Math.round(t)));
  $('scrubber').value=t;$('clock').textContent=clock(t);
  const f=frameAt(t);
  if(f){if(f.img)$('frame').src=f.img;$('frame').dataset.ms=f.ms;$('caption').textContent=f.caption||'';}
  document.querySelectorAll('.strip img').forEach(i=>i.classList.toggle('current',f&&+i.dataset.ms===f.ms));
  let cur=null;
  document.querySelectorAll('#transcript .line').forEach(l=>{const on=+l.dataset.start<=t&&t<+l.dataset.end;
    l.classList.toggle('current',on);if(on&&!cur)cur=l;});
  if(cur)cur.scrollIntoView({block:'nearest'});
  document.querySelectorAll('.turn').forEach(u=>u.classList.toggle('current',+u.dataset.start<=t&&t<+u.dataset.end));
  const here=$('here');
  if(here){let p=null;const T=D.track;
    for(let i=0;i<T.length;i++){if(T[i][0]<=t){const n=T[i+1];
      p=(n&&n[0]-T[i][0]<=D.max_gap_ms)?[T[i][1]+(n[1]-T[i][1])*(t-T[i][0])/(n[0]-T[i][0]),T[i][2]+(n[2]-T[i][2])*(t-T[i][0])/(n[0]-T[i][0])]
        :(t-T[i][0]<=D.edge_ms?[T[i][1],T[i][2]]:null);}else break;}
    here.style.display=p?'':'none';if(p){here.setAttribute('cx',p[0].toFixed(1));here.setAttribute('cy',p[1].toFixed(1));}
    here.dataset.ms=t;}
}
function play(start,end){
  const a=$('audio');seek(start);if(!a)return;
  a.currentTime=start/1000;a.dataset.stopAt=end/1000;a.play().catch(()=>{});
}
window.addEventListener('DOMContentLoaded',()=>{
  $('scrubber').addEventListener('input',e=>seek(+e.target.value));
  document.querySelectorAll('#transcript .line').forEach(l=>l.addEventListener('click',()=>play(+l.dataset.start,+l.dataset.end)));
  document.querySelectorAll('.turn').forEach(u=>u.addEventListener('click',()=>seek(+u.dataset.start)));
  document.querySelectorAll('.strip img,.answer img').forEach(i=>i.addEventListener('click',()=>seek(+i.dataset.ms)));
  document.querySelectorAll('.finding').forEach(x=>x.addEventListener('click',()=>seek(+x.dataset.start)));
  const a=$('audio');
  if(a)a.addEventListener('timeupdate',()=>{if(a.dataset.stopAt&&a.currentTime>=+a.dataset.stopAt)a.pause();});
  const only=$('only-flagged');
  if(only)only.addEventListener('change',()=>document.querySelectorAll('.answer').forEach(x=>
    x.style.display=only.checked&&!x.classList.contains('flagged')?'none':''));
  const m=location.hash.match(/t=(\\d+)/);seek(m?+m[1]:0);
});
window.addEventListener('hashchange',()=>{const m=location.hash.match(/t=(\\d+)/);if(m)seek(+m[1]);});
"""

INDEX_SCRIPT = """
const D=JSON.parse(document.getElementById('data').textContent);
const clock=ms=>{const s=Math.floor(ms/1000);return String(Math.floor(s/60)).padStart(2,'0')+':'+String(s%60).padStart(2,'0');};
const esc=s=>s.replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
function search(q){
  const out=document.getElementById('results');q=q.trim().toLowerCase();
  if(!q){out.innerHTML='';return;}
  const hits=D.rows.filter(r=>r.text.toLowerCase().includes(q)).slice(0,500);
  out.innerHTML='<p class="muted">'+hits.length+' match'+(hits.length===1?'':'es')+'</p>'+hits.map(r=>
    '<div class="hit"><a href="'+encodeURIComponent(r.source_id)+'.html#t='+r.ms+'">'+esc(r.name)+' '+clock(r.ms)+
    '</a> <span class="muted">'+r.kind+'</span> '+esc(r.text)+'</div>').join('');
}
window.addEventListener('DOMContentLoaded',()=>{document.getElementById('search').addEventListener('input',e=>search(e.target.value));});
"""


# A row whose text the model generated with a mean token log-probability under this is shown as
# low confidence (Whisper's logprob_threshold, -1.0, is the same idea).
LOW_CONFIDENCE = -1.0


def is_low(confidence) -> bool:
    return confidence is not None and confidence < LOW_CONFIDENCE


def _low_tag(confidence) -> str:
    return f"<span class='lowtag' title='mean token log-probability {confidence:.2f}'>low confidence</span>" if is_low(confidence) else ""


def _clock(ms) -> str:
    return ms_to_clock_tenths(int(ms or 0))


def _json(obj) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(obj, separators=(",", ":")).replace("</", "<\\/")


# -- media beside the pages --------------------------------------------------------------------------
def _write_frames(path: str, files: Path, fps: float) -> dict[int, str]:
    """Every kept frame (the run's rule: fast decode at ``fps``) as a small JPEG; {frame_ms: file name}."""
    from PIL import Image

    from onepass.operators.decode import DecodeError, MediaReader, VideoFrame

    out: dict[int, str] = {}
    try:
        with MediaReader(path, fps=fps, mode="fast", audio=False) as media:
            for item in media.items():
                if isinstance(item, VideoFrame):
                    img = Image.fromarray(item.rgb)
                    img.thumbnail((THUMB_PX, THUMB_PX))
                    name = f"f{item.frame_ms:09d}.jpg"
                    img.save(files / name, format="JPEG", quality=75)
                    out[item.frame_ms] = name
    except (DecodeError, OSError):
        pass
    return out


def _write_audio(path: str, files: Path) -> str | None:
    """The source's 16 kHz mono audio as Opus in WebM (~24 kbit/s), times as in the tables."""
    import av
    import numpy as np

    from onepass.operators.decode import AudioChunk, DecodeError, MediaReader

    target = files / "audio.webm"
    try:
        with MediaReader(path, video=False) as media:
            if not media.info.has_audio:
                return None
            with av.open(str(target), "w", format="webm") as out:
                stream = out.add_stream("libopus", rate=RATE_HZ)
                stream.layout, stream.bit_rate = "mono", 24000
                pos = 0
                for item in media.items():
                    if not isinstance(item, AudioChunk) or not item.samples.size:
                        continue
                    if pos == 0 and item.start_ms > 0:  # keep table times: silence before the first sample
                        pos = _encode(out, stream, np.zeros(item.start_ms * RATE_HZ // 1000, np.float32), pos)
                    pos = _encode(out, stream, item.samples, pos)
                for packet in stream.encode(None):
                    out.mux(packet)
        return target.name
    except (DecodeError, OSError, av.FFmpegError, ValueError):
        target.unlink(missing_ok=True)
        return None


def _encode(out, stream, samples, pos: int) -> int:
    import av

    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype("float32"), format="flt", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = RATE_HZ, pos, Fraction(1, RATE_HZ)
    for packet in stream.encode(frame):
        out.mux(packet)
    return pos + samples.size


# -- pages --------------------------------------------------------------------------------------------
def _rows(con, table: str, cols: str, sid: str) -> list[tuple]:
    return con.execute(f"SELECT {cols} FROM {table} WHERE source_id = ? ORDER BY start_ms", [sid]).fetchall()


def _source_page(con, src: dict, out_dir: Path, fps: float) -> tuple[str, dict]:
    sid, e = src["source_id"], html.escape
    files = out_dir / f"{sid}_files"
    files.mkdir(parents=True, exist_ok=True)
    rel = f"{sid}_files/"
    caption_rows = _rows(con, "captions", "frame_ms, text, confidence", sid)
    captions = {t: c for t, c, _ in caption_rows}
    caption_low = {t for t, _, conf in caption_rows if is_low(conf)}
    frames_on_disk = _write_frames(src["path"], files, fps) if src["status"] != "error" and not _is_stream(src) else {}
    audio = _write_audio(src["path"], files) if src["status"] != "error" and not _is_stream(src) else None
    frame_ms = sorted(set(frames_on_disk) | set(captions))
    frames = [{"ms": t, "caption": captions.get(t, "") + (" (low confidence)" if t in caption_low else ""),
               "img": rel + frames_on_disk[t] if t in frames_on_disk else None} for t in frame_ms]
    transcript_rows = _rows(con, "transcripts", "start_ms, end_ms, speaker, text, confidence", sid)
    transcript = [r[:4] for r in transcript_rows]
    turns = _rows(con, "speakers", "start_ms, end_ms, speaker", sid)
    answer_rows = _rows(con, "answers", "start_ms, end_ms, question, text, confidence", sid)
    answers = [r[:4] for r in answer_rows]
    speakers = sorted({t[2] for t in turns} | {t[2] for t in transcript if t[2]})
    colour = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(speakers)}
    duration = max([src.get("duration_ms") or 0] + [r[1] for r in turns + transcript + answers] + [t + 1000 for t in frame_ms] + [1])
    status = src["status"]
    badge = f"<span class='badge {e(status)}'>{e(status)}</span>"
    note = {"live": "a live stream: the windows committed so far", "stopped": "a live stream stopped by Ctrl-C: every committed window"}.get(status, "")

    positioned = con.execute("SELECT start_ms, latitude, longitude FROM captions WHERE source_id = ? UNION ALL "
                             "SELECT start_ms, latitude, longitude FROM transcripts WHERE source_id = ?", [sid, sid]).fetchall()
    track_html, track = _track_svg(positioned)
    findings = _findings(con, sid)

    def thumb(f):
        ms = f["frame_ms"]
        return rel + frames_on_disk[ms] if ms in frames_on_disk else None

    data = {"duration_ms": duration, "frames": frames, "track": track, "max_gap_ms": MAX_GAP_MS, "edge_ms": EDGE_MS}
    p = [f"<!doctype html><html><head><meta charset='utf-8'><title>onepass: {e(sid)}</title><style>{CSS}</style>",
         f"<script type='application/json' id='data'>{_json(data)}</script>",
         f"<script>{SOURCE_SCRIPT}</script></head><body>",
         f"<p><a href='index.html'>&larr; all sources</a></p><h1>{e(Path(src['path']).name)}{badge}</h1>",
         f"<p class='muted'>{e(note)}</p>" if note else "",
         f"<p class='error'>{e(src['error'])}</p>" if src.get("error") else "",
         f"<p class='muted'>{e(src['telemetry_note'])}</p>" if src.get("telemetry_note") else "",
         f"<h2>Findings ({len(findings)})</h2><div id='findings'>{_findings_html(findings, thumb)}</div>" if findings or answers else ""]
    first = frames[0] if frames else None
    p.append("<div id='stage'><div id='view'>"
             f"<img id='frame' alt='kept frame' src='{e(first['img'] or '') if first else ''}'>"
             f"<div id='caption'></div><input type='range' id='scrubber' min='0' max='{duration}' step='1' value='0'>"
             "<div><span id='clock'>00:00.0</span></div>")
    if audio:
        p.append(f"<audio id='audio' controls preload='auto' src='{e(rel + audio)}'></audio>")
    p.append("<div class='timeline' id='timeline'>" + "".join(
        f"<div class='turn' data-start='{a}' data-end='{b}' title='{e(s)} {_clock(a)}-{_clock(b)}' "
        f"style='left:{100 * a / duration:.3f}%;width:{max(0.4, 100 * (b - a) / duration):.3f}%;background:{colour[s]}'></div>"
        for a, b, s in turns) + "</div><div class='muted'>" + "".join(
        f"<span style='color:{colour[s]}'>&#9632;</span> {e(s)} &nbsp;" for s in speakers) + "</div></div>")
    p.append(f"<div id='transcript'><h2>Transcript ({len(transcript)} lines)</h2>" + "".join(
        f"<div class='line{' low' if is_low(conf) else ''}' data-start='{a}' data-end='{b}' style='border-color:{colour.get(s, '#999')}'>"
        f"<span class='time'>{_clock(a)}&ndash;{_clock(b)}</span><b>{e(s or '')}</b> {e(text)}{_low_tag(conf)}</div>"
        for a, b, s, text, conf in transcript_rows) + "</div></div>")
    p.append(track_html)
    p.append(f"<h2>Kept frames ({len(frames)})</h2><div class='strip' id='strip'>" + "".join(
        f"<img loading='lazy' data-ms='{f['ms']}' src='{e(f['img'])}' title='{_clock(f['ms'])} {e(f['caption'])}'>"
        for f in frames if f["img"]) + "</div>")
    p.append(_answers_html(answer_rows, frames))
    hidden = {"content_fingerprint", "config_fingerprint"}  # every other column of the sources row, in table order
    p.append("<h2>Metadata</h2><table id='metadata'>" + "".join(
        f"<tr><td>{k}</td><td>{e(str(v))}</td></tr>" for k, v in src.items() if v is not None and k not in hidden) + "</table></body></html>")
    thumbs = {f["start_ms"]: thumb(f) for f in findings}
    return "".join(p), {**_summary(captions, transcript, turns, answers, speakers), "answer_rows": answer_rows,
                        "findings": findings, "thumbs": thumbs, "transcript": transcript_rows, "track_html": track_html}


def _findings(con, sid: str | None = None) -> list[dict]:
    """The ``findings`` view's rows (one source's, or all), in time order."""
    where, args = ("WHERE source_id = ?", [sid]) if sid is not None else ("", [])
    cur = con.execute(f"SELECT * FROM findings {where} ORDER BY path, start_ms", args)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _position(f: dict) -> str:
    if f.get("latitude") is None:
        return ""
    alt = f" {f['altitude_m']:.1f} m" if f.get("altitude_m") is not None else ""
    return f"{f['latitude']:.6f}, {f['longitude']:.6f}{alt}"


def _findings_html(findings: list[dict], thumb, link=None) -> str:
    """Findings, each with its frame (``thumb(finding)``: an image path or None), time, position,
    question, finding and what was said meanwhile; ``link(finding)``: a page to open at it."""
    e = html.escape
    if not findings:
        return "<p class='muted'>none</p>"
    p = []
    for f in findings:
        img = thumb(f)
        where = f"<a href='{e(link(f))}'>{e(Path(f['path']).name)} {_clock(f['start_ms'])}</a>" if link else \
            f"<span class='time'>{_clock(f['start_ms'])}&ndash;{_clock(f['end_ms'])}</span>"
        p.append(f"<div class='finding' data-start='{f['start_ms']}'>" + (f"<img src='{e(img)}' data-ms='{f['frame_ms']}'>" if img else "") +
                 f"<div>{where} <span class='pos'>{e(_position(f))}</span><br><b>{e(f['finding'])}</b> <i>({e(f['question'])})</i>"
                 f"{_low_tag(f.get('confidence'))}" + (f"<br><span class='muted'>said: {e(f['remark'])}</span>" if f.get("remark") else "") +
                 "</div></div>")
    return "".join(p)


def _track_svg(rows: list[tuple]) -> tuple[str, list]:
    """An inline SVG of the positions (ms, latitude, longitude) in time order (equirectangular,
    north up; no map tiles: offline), and the track in its coordinates for the script."""
    import math

    pts = sorted({(ms, lat, lon) for ms, lat, lon in rows if lat is not None and lon is not None})
    if len(pts) < 2:
        return "", []
    lat0 = sum(p[1] for p in pts) / len(pts)
    k = math.cos(math.radians(lat0))
    xs, ys = [p[2] * k for p in pts], [-p[1] for p in pts]
    w, h, pad = 480, 240, 14
    span = max(max(xs) - min(xs), (max(ys) - min(ys)) * w / h, 1e-9)
    scale = (w - 2 * pad) / span
    track = [[ms, round(pad + (x - min(xs)) * scale, 1), round(pad + (y - min(ys)) * scale, 1)] for (ms, _, _), x, y in zip(pts, xs, ys)]
    segments, cur = [], [track[0]]
    for a, b in zip(track, track[1:]):  # a gap in the fixes is a gap in the line
        if b[0] - a[0] > MAX_GAP_MS:
            segments.append(cur)
            cur = []
        cur.append(b)
    segments.append(cur)
    height = max(2 * pad, int(max(t[2] for t in track) + pad))
    lines = "".join(f"<polyline class='path' points='{' '.join(f'{x},{y}' for _, x, y in s)}'/>" for s in segments if len(s) > 1)
    dots = "".join(f"<circle class='mark' r='2' cx='{s[0][1]}' cy='{s[0][2]}'/>" for s in segments if len(s) == 1)
    return (f"<h2>Track</h2><svg id='track' width='{w}' height='{height}' viewBox='0 0 {w} {height}'>{lines}{dots}"
            f"<circle id='here' class='here' r='6' cx='{track[0][1]}' cy='{track[0][2]}'/></svg>"
            f"<div class='muted'>{pts[0][1]:.5f}, {pts[0][2]:.5f} &rarr; {pts[-1][1]:.5f}, {pts[-1][2]:.5f} (north up)</div>"), track


def _answers_html(answers: list[tuple], frames: list[dict]) -> str:
    """The answers, each beside the frame shown when its window starts; flagged ones marked."""
    if not answers:
        return ""
    e = html.escape
    flagged = sum(is_flagged(t) for _, _, _, t, _ in answers)
    p = [f"<h2>Answers ({flagged} flagged of {len(answers)})</h2>"
         "<label><input type='checkbox' id='only-flagged'> only flagged windows</label><div id='answers'>"]
    for a, b, question, text, conf in answers:
        f = next((x for x in reversed(frames) if x["ms"] <= a and x["img"]), frames[0] if frames and frames[0]["img"] else None)
        img = f"<img data-ms='{f['ms']}' src='{e(f['img'])}'>" if f else ""
        p.append(f"<div class='answer{' flagged' if is_flagged(text) else ''}' data-start='{a}'>{img}<div>"
                 f"<span class='time'>{_clock(a)}&ndash;{_clock(b)}</span><i>{e(question)}</i><br>{e(text)}{_low_tag(conf)}</div></div>")
    return "".join(p) + "</div>"


def _summary(captions: dict, transcript: list, turns: list, answers: list, speakers: list) -> dict:
    """The index page's figures of one source, and its rows for the search box."""
    words = sum(len(t.split()) for *_, t in transcript)
    talk: dict[str, int] = {}
    for a, b, s in turns:
        talk[s] = talk.get(s, 0) + b - a
    figures = {"words": words, "speakers": len(speakers), "talk_ms": talk, "answers": len(answers),
               "flagged": sum(is_flagged(t) for *_, t in answers)}
    search_rows = [{"kind": "said", "ms": a, "text": f"{s + ': ' if s else ''}{t}"} for a, _, s, t in transcript]
    search_rows += [{"kind": "seen", "ms": t, "text": c} for t, c in sorted(captions.items())]
    search_rows += [{"kind": "answer", "ms": a, "text": f"{q}: {t}"} for a, _, q, t in answers]
    return {"figures": figures, "search": search_rows, "answers": answers}


def _is_stream(src: dict) -> bool:
    return "://" in str(src["path"]) or str(src["path"]) in ("-", "pipe:0")


def _index(sources: list[dict], extra: dict[str, dict]) -> str:
    e = html.escape
    rows, search = [], []
    for s in sources:
        sid = s["source_id"]
        x = extra.get(sid, {"figures": {}, "search": []})
        fig = x["figures"]
        talk = ", ".join(f"{k} {v / 1000:.0f} s" for k, v in sorted(fig.get("talk_ms", {}).items()))
        rows.append(f"<tr data-source='{e(sid)}'><td><a href='{e(sid)}.html'>{e(Path(s['path']).name)}</a></td>"
                    f"<td><span class='badge {e(s['status'])}'>{e(s['status'])}</span></td><td>{_clock(s.get('duration_ms'))}</td>"
                    f"<td>{s.get('windows') or 0}</td><td>{fig.get('words', 0)}</td><td>{fig.get('speakers', 0)}</td><td>{e(talk)}</td>"
                    f"<td>{fig.get('flagged', 0)} / {fig.get('answers', 0)}</td><td class='error'>{e(s.get('error') or '')}</td></tr>")
        name = Path(s["path"]).name
        search += [{**r, "source_id": sid, "name": name} for r in x["search"]]
    findings = [f for s in sources for f in extra.get(s["source_id"], {}).get("findings", [])]
    thumb = lambda f: extra[f["source_id"]]["thumbs"].get(f["start_ms"])  # noqa: E731
    flag_html = _findings_html(findings, thumb, link=lambda f: f"{f['source_id']}.html#t={f['start_ms']}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>onepass results</title><style>{CSS}</style>"
            f"<script type='application/json' id='data'>{_json({'rows': search})}</script><script>{INDEX_SCRIPT}</script></head><body>"
            f"<h1>onepass results: {len(sources)} sources</h1>"
            f"<h2>Findings ({len(findings)})</h2><div id='flagged'>{flag_html}</div>"
            "<p><input type='search' id='search' size='40' placeholder='search what was said, seen and answered'></p><div id='results'></div>"
            "<table id='sources'><tr><th>source</th><th>status</th><th>duration</th><th>windows</th><th>words</th><th>speakers</th>"
            f"<th>talk time</th><th>flagged</th><th>error</th></tr>{''.join(rows)}</table>"
            "<p class='muted'>answers.csv beside this page lists every answer for a work-order system.</p></body></html>")


PRINT_CSS = """
@page{size:A4;margin:14mm}
body{font-family:system-ui,sans-serif;color:#222;font-size:11px;margin:0}
h1{font-size:20px;margin:0 0 8px} h2{font-size:14px;margin:14px 0 6px} .muted{color:#666}
table{border-collapse:collapse;width:100%} td,th{padding:2px 6px;text-align:left;border-bottom:1px solid #ddd;vertical-align:top}
.page{break-before:page} .finding{display:flex;gap:8px;padding:4px 0;border-bottom:1px solid #ddd;break-inside:avoid}
.finding img{width:150px} .pos{font-family:monospace;color:#555} .time{font-family:monospace;color:#555;margin-right:6px}
.line{break-inside:avoid} .error{color:#b00}
"""


def _print_html(sources: list[dict], extra: dict[str, dict]) -> str:
    """One document to print: a cover with the run's figures, every finding with its frame, time,
    position and remark, then a page per source (figures, findings, transcript)."""
    e = html.escape
    figs = [extra.get(s["source_id"], {}).get("figures", {}) for s in sources]
    findings = [f for s in sources for f in extra.get(s["source_id"], {}).get("findings", [])]
    thumb = lambda f: extra[f["source_id"]]["thumbs"].get(f["start_ms"])  # noqa: E731
    status = {}
    for s in sources:
        status[s["status"]] = status.get(s["status"], 0) + 1
    processed = sorted(str(s["processed_at"])[:16] for s in sources if s.get("processed_at"))
    cover = [("sources", ", ".join(f"{n} {k}" for k, n in sorted(status.items()))),
             ("media", _clock(sum(s.get("duration_ms") or 0 for s in sources))),
             ("windows", sum(s.get("windows") or 0 for s in sources)),
             ("words transcribed", sum(f.get("words", 0) for f in figs)),
             ("findings", f"{len(findings)} (of {sum(f.get('answers', 0) for f in figs)} answers)"),
             ("with positions", sum(1 for s in sources if s.get("telemetry"))),
             ("model", ", ".join(sorted({str(s.get("model")) for s in sources}))),
             ("processed", f"{processed[0]} .. {processed[-1]} UTC" if processed else "")]
    p = [f"<!doctype html><html><head><meta charset='utf-8'><title>onepass report</title><style>{PRINT_CSS}</style></head><body>",
         "<h1>onepass inspection report</h1><table id='cover'>" + "".join(f"<tr><th>{k}</th><td>{e(str(v))}</td></tr>" for k, v in cover) + "</table>",
         f"<h2>Findings ({len(findings)})</h2>",
         _findings_html(findings, thumb, link=lambda f: f"{f['source_id']}.html#t={f['start_ms']}")]
    for s in sources:
        x = extra.get(s["source_id"], {})
        fig = x.get("figures", {})
        talk = ", ".join(f"{k} {v / 1000:.0f} s" for k, v in sorted(fig.get("talk_ms", {}).items()))
        p.append(f"<div class='page'><h1>{e(Path(s['path']).name)}</h1><table>"
                 f"<tr><th>status</th><td>{e(s['status'])}</td></tr><tr><th>duration</th><td>{_clock(s.get('duration_ms'))}</td></tr>"
                 f"<tr><th>windows</th><td>{s.get('windows') or 0}</td></tr><tr><th>words</th><td>{fig.get('words', 0)}</td></tr>"
                 f"<tr><th>talk time</th><td>{e(talk)}</td></tr><tr><th>telemetry</th><td>{e(s.get('telemetry') or 'none')}</td></tr>"
                 + (f"<tr><th>error</th><td class='error'>{e(s['error'])}</td></tr>" if s.get("error") else "") + "</table>")
        own = x.get("findings", [])
        p.append(f"<h2>Findings ({len(own)})</h2>" + _findings_html(own, thumb))
        lines = x.get("transcript", [])
        p.append(f"<h2>Transcript ({len(lines)} lines)</h2>" + "".join(
            f"<div class='line'><span class='time'>{_clock(a)}&ndash;{_clock(b)}</span><b>{e(sp or '')}</b> {e(t)}</div>"
            for a, b, sp, t, _ in lines) + "</div>")
    return "".join(p) + "</body></html>"


def chromium_path() -> str:
    """The system Chromium that prints the PDF (ONEPASS_CHROMIUM, else chromium on PATH)."""
    import os
    import shutil

    for name in filter(None, (os.environ.get("ONEPASS_CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("onepass report --pdf prints with a Chromium browser: apt-get install chromium (or set ONEPASS_CHROMIUM to one)")


def print_pdf(page: Path, pdf: Path) -> Path:
    """Print an HTML page to PDF with the system Chromium through Playwright (offline: the page
    and its images are local files)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise RuntimeError("onepass report --pdf needs Playwright (it drives the system Chromium; no browser download): "
                           "pip install 'onepass[pdf]'") from exc
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            tab = browser.new_page()
            tab.goto(page.resolve().as_uri(), wait_until="load")
            tab.pdf(path=str(pdf), format="A4", print_background=True, margin={"top": "14mm", "bottom": "14mm", "left": "12mm", "right": "12mm"})
        finally:
            browser.close()
    return pdf


def write_reports(output: Path, out_dir: Path, source_id: str | None = None, fps: float = 1.0, pdf: bool = False) -> list[Path]:
    """The index, one page per source (or only ``source_id``'s), their media folders and answers.csv;
    with ``pdf``, report.pdf printed from report_print.html (cover, findings, a page per source)."""
    con = connect(output)
    cur = con.execute("SELECT * FROM sources ORDER BY path")
    cols = [d[0] for d in cur.description]
    sources = [dict(zip(cols, r)) for r in cur.fetchall()]
    if source_id is not None and source_id not in {s["source_id"] for s in sources}:
        raise KeyError(source_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, extra = [], {}
    for src in sources:
        if source_id is not None and src["source_id"] != source_id:
            continue
        page, extra[src["source_id"]] = _source_page(con, src, out_dir, fps)
        path = out_dir / f"{src['source_id']}.html"
        path.write_text(page, encoding="utf-8")
        written.append(path)
    with open(out_dir / "answers.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["source_id", "path", "start_ms", "end_ms", "question", "answer", "flagged", "confidence", "low_confidence"])
        for src in sources:
            for a, b, q, t, conf in extra.get(src["source_id"], {}).get("answer_rows", []):
                w.writerow([src["source_id"], src["path"], a, b, q, t, is_flagged(t), "" if conf is None else conf, is_low(conf)])
    index = out_dir / "index.html"
    index.write_text(_index(sources, extra), encoding="utf-8")
    if pdf:
        printed = [s for s in sources if s["source_id"] in extra]
        page = out_dir / "report_print.html"
        page.write_text(_print_html(printed, extra), encoding="utf-8")
        written.append(print_pdf(page, out_dir / "report.pdf"))
    return [index, *written]
