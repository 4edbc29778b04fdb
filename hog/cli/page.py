"""The report as one self-contained HTML page: its figures as JSON, drawn by the page's own
script on canvases. Nothing is fetched: no fonts, scripts or styles from the network."""

import html
import json
import pathlib

_HERE = pathlib.Path(__file__).parent
# Never fetched: a policy that allows nothing from outside the page itself.
_POLICY = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"


def render(data: dict) -> str:
    script = (_HERE / "report_page.js").read_text(encoding="utf-8")
    style = (_HERE / "report_page.css").read_text(encoding="utf-8")
    # "</" cannot end the script element early once escaped; JSON reads "<\/" as "</".
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    title = html.escape(data["title"])
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{_POLICY}">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header><h1>{title}</h1><p id="subtitle"></p><ul id="notes"></ul></header>
<pre id="errors" hidden></pre>
<section><h2>Summary</h2><div id="summary" class="cards"></div>
<h3>Where the cores' time went</h3><div id="split"></div></section>
<section><h2>Timeline</h2>
<p class="controls">Colour by <select id="colour"><option value="name">name</option>
<option value="outcome">outcome</option></select> <span id="legend"></span></p>
<div class="canvas-box"><canvas id="timeline"></canvas><div id="tip" hidden></div></div></section>
<section><h2>Tasks over time</h2><div class="canvas-box"><canvas id="series"></canvas></div>
<p class="legend"><span class="key queued"></span>queued (waiting, blocked or held)
<span class="key running"></span>running <span class="key done"></span>finished done per second;
each on its own scale</p></section>
<section><h2>Per name</h2><div id="names"></div></section>
<section><h2>Failures</h2><div id="failures"></div></section>
<section><h2>Hogs</h2><div id="hogs"></div></section>
<script type="application/json" id="data">{payload}</script>
<script>{script}</script>
</body>
</html>
"""
