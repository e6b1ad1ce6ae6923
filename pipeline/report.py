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

from onepass.model.tasks import UNSUPPORTED, is_marker

from .writers import connect

__all__ = ["write_reports", "is_flagged"]

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
THUMB_PX = 320  # longest side of a frame JPEG
_NOT_FLAGGED = {"", "none", "no", "nothing", "n/a", "na", "no defects", "nothing visible", "none visible"}

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


def is_flagged(answer: str) -> bool:
    """An answer that says something (not empty, not 'none'/'no'..., not a marker of media
    outside the model's domain, not an unsupported question): a moment to look at."""
    text = answer.strip().lower().strip(".!")
    return text not in _NOT_FLAGGED and text != UNSUPPORTED and not is_marker(text)


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

    p = [f"<!doctype html><html><head><meta charset='utf-8'><title>onepass: {e(sid)}</title><style>{CSS}</style>",
         f"<script type='application/json' id='data'>{_json({'duration_ms': duration, 'frames': frames})}</script>",
         f"<script>{SOURCE_SCRIPT}</script></head><body>",
         f"<p><a href='index.html'>&larr; all sources</a></p><h1>{e(Path(src['path']).name)}{badge}</h1>",
         f"<p class='muted'>{e(note)}</p>" if note else "",
         f"<p class='error'>{e(src['error'])}</p>" if src.get("error") else ""]
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
    p.append(f"<h2>Kept frames ({len(frames)})</h2><div class='strip' id='strip'>" + "".join(
        f"<img loading='lazy' data-ms='{f['ms']}' src='{e(f['img'])}' title='{_clock(f['ms'])} {e(f['caption'])}'>"
        for f in frames if f["img"]) + "</div>")
    p.append(_answers_html(answer_rows, frames))
    hidden = {"content_fingerprint", "config_fingerprint"}  # every other column of the sources row, in table order
    p.append("<h2>Metadata</h2><table id='metadata'>" + "".join(
        f"<tr><td>{k}</td><td>{e(str(v))}</td></tr>" for k, v in src.items() if v is not None and k not in hidden) + "</table></body></html>")
    return "".join(p), {**_summary(captions, transcript, turns, answers, speakers), "answer_rows": answer_rows}


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
    flagged = [(s, a, q, t) for s in sources for a, _, q, t in extra.get(s["source_id"], {}).get("answers", []) if is_flagged(t)]
    flag_html = "".join(f"<div><a href='{e(s['source_id'])}.html#t={a}'>{e(Path(s['path']).name)} {_clock(a)}</a> <i>{e(q)}</i> {e(t)}</div>"
                        for s, a, q, t in flagged) or "<p class='muted'>none</p>"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>onepass results</title><style>{CSS}</style>"
            f"<script type='application/json' id='data'>{_json({'rows': search})}</script><script>{INDEX_SCRIPT}</script></head><body>"
            f"<h1>onepass results: {len(sources)} sources</h1>"
            "<p><input type='search' id='search' size='40' placeholder='search what was said, seen and answered'></p><div id='results'></div>"
            "<table id='sources'><tr><th>source</th><th>status</th><th>duration</th><th>windows</th><th>words</th><th>speakers</th>"
            f"<th>talk time</th><th>flagged</th><th>error</th></tr>{''.join(rows)}</table>"
            f"<h2>Flagged moments ({len(flagged)})</h2><div id='flagged'>{flag_html}</div>"
            "<p class='muted'>answers.csv beside this page lists every answer for a work-order system.</p></body></html>")


def write_reports(output: Path, out_dir: Path, source_id: str | None = None, fps: float = 1.0) -> list[Path]:
    """The index, one page per source (or only ``source_id``'s), their media folders and answers.csv."""
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
    return [index, *written]
