"""``onepass report``: one self-contained HTML page per source, and an index.

Each page embeds its pictures (JPEG thumbnails as data: URLs, no CDN, works offline): a strip of
frames, one per run of identical captions, with the caption; the transcript coloured by speaker
with times (a click shows the frame at that moment); the speaker timeline; the answers to
``--ask`` questions; the source's metadata. The index lists sources with status and errors.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from .writers import connect

__all__ = ["write_reports"]

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px} h2{font-size:17px;margin-top:28px}
table.meta td{padding:2px 10px 2px 0;font-size:13px}
.strip{display:flex;gap:10px;overflow-x:auto;padding-bottom:8px}
.frame{flex:0 0 auto;width:192px;font-size:12px;border:2px solid transparent;border-radius:4px;background:#fff}
.frame img{width:192px;display:block;border-radius:2px}
.frame.active{border-color:#e6550d}
.line{cursor:pointer;padding:3px 6px;border-left:6px solid #999;margin:2px 0;background:#fff}
.line:hover{background:#eef}
.time{font-family:monospace;color:#555;margin-right:8px}
.timeline{position:relative;height:28px;background:#e8e8e8;border-radius:4px;margin:6px 0}
.turn{position:absolute;top:3px;height:22px;border-radius:3px;opacity:.85}
.legend span{display:inline-block;margin-right:14px;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
#viewer img{max-width:640px;border:1px solid #ccc}
.error{color:#b00}
"""
SCRIPT = """
function showFrame(ms){
  let best=null;document.querySelectorAll('.frame').forEach(f=>{
    f.classList.remove('active');if(+f.dataset.ms<=ms&&(!best||+best.dataset.ms<+f.dataset.ms))best=f;});
  if(!best)best=document.querySelector('.frame');
  if(best){best.classList.add('active');best.scrollIntoView({block:'nearest',inline:'center'});
    document.getElementById('viewer').innerHTML='<img src="'+best.querySelector('img').src+'"><div>'+best.dataset.caption+'</div>';}
}
"""


def _clock(ms) -> str:
    ms = int(ms or 0)
    return f"{ms // 60000:02d}:{ms // 1000 % 60:02d}.{ms % 1000 // 100}"


def _thumbnails(path: str, wanted_ms: list[int], width: int = 320) -> dict[int, str]:
    """data: URLs of the kept frames at ``wanted_ms`` (exact decode, as the run picked them)."""
    from PIL import Image

    from onepass.operators.decode import DecodeError, MediaReader, VideoFrame

    wanted, out = set(wanted_ms), {}
    if not wanted:
        return out
    try:
        with MediaReader(path, mode="fast", audio=False) as media:
            for item in media.items():
                if isinstance(item, VideoFrame) and item.frame_ms in wanted:
                    img = Image.fromarray(item.rgb)
                    img.thumbnail((width, width))
                    buf = io.BytesIO()
                    img.save(buf, format="JPEG", quality=80)
                    out[item.frame_ms] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
                    if len(out) == len(wanted):
                        break
    except DecodeError:
        pass
    return out


def _page(con, src: dict) -> str:
    sid, e = src["source_id"], html.escape
    q = lambda table, cols: con.execute(f"SELECT {cols} FROM {table} WHERE source_id = ? ORDER BY start_ms", [sid]).fetchall()  # noqa: E731
    captions = q("captions", "frame_ms, text")
    runs = []
    for frame_ms, text in captions:
        if not runs or runs[-1][1] != text:
            runs.append((frame_ms, text))
    thumbs = _thumbnails(src["path"], [r[0] for r in runs]) if src["status"] == "ok" else {}
    transcript = q("transcripts", "start_ms, end_ms, speaker, text")
    turns = q("speakers", "start_ms, end_ms, speaker")
    answers = q("answers", "start_ms, end_ms, question, text")
    speakers = sorted({t[2] for t in turns} | {t[2] for t in transcript if t[2]})
    colour = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(speakers)}
    duration = max([src.get("duration_ms") or 0] + [t[1] for t in turns] + [t[1] for t in transcript] + [1])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>onepass: {e(sid)}</title><style>{CSS}</style>"
             f"<script>{SCRIPT}</script></head><body><p><a href='index.html'>&larr; all sources</a></p><h1>{e(Path(src['path']).name)}</h1>"]
    meta = [(k, src.get(k)) for k in ("source_id", "path", "status", "error", "duration_ms", "container", "video_codec",
                                      "audio_codec", "width", "height", "fps", "sample_rate_hz", "channels", "windows", "model")]
    parts.append("<table class='meta' id='metadata'>" + "".join(f"<tr><td>{k}</td><td>{e(str(v))}</td></tr>" for k, v in meta if v is not None) + "</table>")
    parts.append(f"<h2>Frames and captions ({len(captions)} kept frames)</h2><div class='strip' id='frames'>")
    for frame_ms, text in runs:
        img = f"<img src='{thumbs[frame_ms]}' alt='frame at {_clock(frame_ms)}'>" if frame_ms in thumbs else ""
        parts.append(f"<div class='frame' data-ms='{frame_ms}' data-caption='{e(text)}'>{img}<span class='time'>{_clock(frame_ms)}</span>{e(text)}</div>")
    parts.append("</div><div id='viewer'></div>")
    parts.append("<h2>Speakers</h2><div class='legend'>" + "".join(f"<span><i style='background:{colour[s]}'></i>{e(s)}</span>" for s in speakers) + "</div>")
    parts.append("<div class='timeline' id='timeline'>" + "".join(
        f"<div class='turn' title='{e(s)} {_clock(a)}-{_clock(b)}' style='left:{100 * a / duration:.3f}%;width:{max(0.3, 100 * (b - a) / duration):.3f}%;background:{colour[s]}'></div>"
        for a, b, s in turns) + "</div>")
    parts.append(f"<h2>Transcript ({len(transcript)} segments)</h2><div id='transcript'>")
    for a, b, s, text in transcript:
        parts.append(f"<div class='line' style='border-color:{colour.get(s, '#999')}' onclick='showFrame({a})'>"
                     f"<span class='time'>{_clock(a)}&ndash;{_clock(b)}</span><b>{e(s or '')}</b> {e(text)}</div>")
    parts.append("</div>")
    if answers:
        parts.append("<h2>Answers</h2><div id='answers'>" + "".join(
            f"<div class='line'><span class='time'>{_clock(a)}&ndash;{_clock(b)}</span><i>{e(qn)}</i> {e(t)}</div>" for a, b, qn, t in answers) + "</div>")
    parts.append("</body></html>")
    return "".join(parts)


def _index(sources: list[dict]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td><a href='{e(s['source_id'])}.html'>{e(Path(s['path']).name)}</a></td><td>{e(s['status'])}</td>"
        f"<td>{_clock(s.get('duration_ms'))}</td><td class='error'>{e(s.get('error') or '')}</td></tr>" for s in sources)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>onepass results</title><style>{CSS} td{{padding:4px 12px}}</style></head>"
            f"<body><h1>onepass results: {len(sources)} sources</h1><table id='sources'><tr><th>source</th><th>status</th>"
            f"<th>duration</th><th>error</th></tr>{rows}</table></body></html>")


def write_reports(output: Path, out_dir: Path, source_id: str | None = None) -> list[Path]:
    con = connect(output)
    cur = con.execute("SELECT * FROM sources ORDER BY path")
    cols = [d[0] for d in cur.description]
    sources = [dict(zip(cols, r)) for r in cur.fetchall()]
    if source_id is not None:
        sources = [s for s in sources if s["source_id"] == source_id]
        if not sources:
            raise KeyError(source_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sources:
        page = out_dir / f"{src['source_id']}.html"
        page.write_text(_page(con, src), encoding="utf-8")
        written.append(page)
    index = out_dir / "index.html"
    index.write_text(_index(sources), encoding="utf-8")
    return [index, *written]
