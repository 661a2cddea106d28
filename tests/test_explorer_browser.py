"""`ssl-mepr explore` in a real browser: Debian's Chromium, driven by Playwright, against the Voilà app served on a tiny run.
The widgets render, a filter changes the clip list, a generated video goes through the video view (uploaded from the
browser), the page logs no console error, and Ctrl-C stops the server. Skipped, with the reason, where Chromium or
Playwright is missing (`.ci/run` installs Chromium; never `playwright install`)."""
import os, re, shutil, signal, socket, subprocess, sys, time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = os.environ.get("SSL_MEPR_SCREENSHOTS")  # a folder: the video view's screenshot is copied there (README figure)
SERVED_RUN = os.environ.get("SSL_MEPR_BROWSER_RUN")  # a run folder to serve instead of the tiny one (`make explorer-screenshot`)

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium; .ci/run does)"),
              pytest.mark.skipif(sync_playwright is None, reason="the playwright package is not installed (pip install -e '.[dev]')")]


def start_explore(run_dir) -> tuple[subprocess.Popen, str]:
    "`ssl-mepr explore --run RUN` in the background; the process and the address it prints."
    process = subprocess.Popen([str(BIN / "ssl-mepr"), "explore", "--run", str(run_dir), "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    end = time.monotonic() + 180
    for line in process.stdout:
        if (found := re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", line)): return process, found.group(0)
        if time.monotonic() > end: break
    process.kill()
    raise AssertionError(f"ssl-mepr explore printed no address; stderr: {process.stderr.read()[-2000:]}")


def dropdown(page, label: str):
    "The <select> of the ipywidgets Dropdown whose description is `label`."
    return page.locator(".widget-dropdown", has=page.locator("label", has_text=re.compile(f"^{re.escape(label)}$"))).locator("select")


def count_text(page) -> str:
    "The explorer's 'k of n clips' line."
    return page.get_by_text(re.compile(r"^\d+ of \d+ clips$")).inner_text()


@pytest.fixture(scope="module")
def served_run(request):
    "The run folder the browser sees: the tiny run, or SSL_MEPR_BROWSER_RUN."
    return Path(SERVED_RUN) if SERVED_RUN else request.getfixturevalue("tiny_predict_run")


@pytest.fixture(scope="module")
def served(served_run):
    "The explorer of the run, served by the command a user runs; the last test stops it with SIGINT."
    process, url = start_explore(served_run)
    yield process, url
    if process.poll() is None:  # a test failed first: SIGTERM stops it as Ctrl-C does (Voilà included)
        process.terminate()
        try: process.wait(60)
        except subprocess.TimeoutExpired: process.kill(); process.wait()


def test_the_explorer_works_in_chromium(served, served_run, tmp_path):
    from ssl_mepr.analysis import stage3_predictions
    from ssl_mepr.media import write_portrait_clip
    process, url = served
    clips = stage3_predictions(served_run, splits=("dev", "test"), device="cpu")
    clip = write_portrait_clip(tmp_path / "my clip.mp4", seconds=2.0)
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        page.goto(url)
        page.get_by_text(re.compile(r"^\d+ of \d+ clips$")).wait_for(timeout=180_000)  # the kernel loads the run first
        assert count_text(page) == f"{len(clips)} of {len(clips)} clips"
        page.locator("img.widget-image").first.wait_for(timeout=60_000)  # the first clip's figure

        dropdown(page, "corpus").select_option("fiv2")
        n_fiv2 = int((clips.corpus == "fiv2").sum())
        page.get_by_text(f"{n_fiv2} of {len(clips)} clips", exact=True).wait_for(timeout=60_000)
        options = page.locator(".widget-select select option").all_inner_texts()
        assert sorted(options) == sorted(clips[clips.corpus == "fiv2"].clip_id), options[:5]  # every FIv2 clip, nothing else

        page.get_by_text("Your video", exact=True).click()
        with page.expect_file_chooser() as chooser: page.locator("button.widget-upload").click()
        chooser.value.set_files(str(clip))
        page.locator("button.widget-upload", has_text="(1)").wait_for(timeout=30_000)  # the upload reached the kernel
        page.locator(".widget-textarea textarea").fill("What a lovely day to meet everyone")
        page.get_by_role("button", name="Predict").click()
        page.locator(".ssl-mepr-status", has_text="done in").wait_for(timeout=300_000)
        assert page.locator(".ssl-mepr-status", has_text="my clip.mp4").count() == 1
        assert page.get_by_text("no transcript given").count() == 0  # the transcript box reached the prediction
        page.get_by_text("present", exact=True).first.wait_for(timeout=30_000)  # the emotions table's column
        page.locator("img.widget-image >> visible=true").wait_for(timeout=30_000)  # the video's figure (the clip tab's is hidden)
        shot = tmp_path / "explorer_video.png"
        page.set_viewport_size({"width": 1366, "height": 1750})  # Voilà scrolls inside the page: a tall window shows the figure
        page.locator("img.widget-image >> visible=true").scroll_into_view_if_needed()
        page.evaluate("() => document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })")
        page.wait_for_timeout(500)
        page.screenshot(path=str(shot))
        browser.close()
    assert shot.stat().st_size > 10_000
    if SCREENSHOTS: shutil.copy(shot, Path(SCREENSHOTS) / "explorer_video.png")
    assert not problems, problems


def test_ctrl_c_stops_the_explorer_cleanly(served):
    process, url = served
    port = int(re.search(r":(\d+)/", url).group(1))
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-2000:]
    assert "explorer stopped" in out
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
