"""report.html in a real browser: headless Chromium (Debian's `chromium`, installed by .ci/run).

The page is opened from a copy with a probe script added at the top of <head>: it records
script errors, failed loads (the error event, captured) and console.error calls, and after
the load event writes how many images there are and which did not decode
(naturalWidth 0) into the DOM, which `--dump-dom` prints. Network access is blocked, so a
page that needed it would show broken images. Skipped only when /usr/bin/chromium is absent.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

import results
from report_runs import bornagain_run, ensemble_run, kd_run, labels_run, sweep

CHROMIUM = Path("/usr/bin/chromium")

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.src) || 'error')),
                        true);
const originalError = console.error;
console.error = (...args) => { window.__errors.push(args.join(' ')); originalError(...args); };
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({images: images.length, broken: broken, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


def open_in_chromium(page: Path, tmp_path: Path) -> dict:
    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    argv = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
            "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert match, f"no probe output; chromium exit {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (apt-get install chromium)")
def test_report_html_renders_in_headless_chromium(tmp_path):
    root = tmp_path / "runs"
    kd_run(root)
    labels_run(root)
    bornagain_run(root, paper={"source": "Furlanello et al. 2018", "BAN-1": 70.5})
    ensemble_run(root)
    sweep(root, scheduler="asha")
    out = tmp_path / "report"
    results.report([root], out, compare=True)
    page = out / "report.html"
    probe = open_in_chromium(page, tmp_path)
    assert probe["errors"] == []
    assert probe["images"] == len(list((out / "figures").glob("*.png"))) >= 8
    assert probe["broken"] == []
    # the probe does see a broken image: one embedded PNG cut short no longer decodes
    html = page.read_text()
    start = html.index("data:image/png;base64,") + len("data:image/png;base64,")
    damaged = tmp_path / "damaged.html"
    damaged.write_text(html[:start] + "iVBORw0KGgo" + html[html.index('"', start):])
    assert len(open_in_chromium(damaged, tmp_path)["broken"]) == 1
