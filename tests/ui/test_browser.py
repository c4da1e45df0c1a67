"""End to end in a real browser (Debian's Chromium driven by Playwright): upload, attack, three defenses.

Screenshots go to $ARTIFACTS_DIR (default: tmp/artifacts in the repository) so that people can look at them.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR", ROOT / "tmp" / "artifacts"))
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 300_000
N_COLUMNS = 6  # clean, attacked, one per paradigm, all three together (demo.ui.views.RESULT_COLUMNS)

if not os.path.exists(CHROMIUM):
    pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
# Playwright's assertions wait 5 s by default, set apart from the page's timeout: on a loaded 2-core machine
# a model switch or a scene's first update can take longer, which made a scene check fail now and then.
sync_api.expect.set_options(timeout=60_000)


@pytest.fixture(scope="module")
def app_model(tiny_dir):
    """The teaching model when its weights are there (nicer screenshots), else the tiny test model."""
    if (ROOT / "assets" / "teaching" / "open_clip_config.json").is_file():
        return "teaching"
    return f"local-dir:{tiny_dir}"


def _working_defenses(model_key: str) -> dict[str, str]:
    """For each paradigm, the first registered defense that runs on this model (else "none")."""
    import demo.defenses  # noqa: F401
    from demo import pipeline
    from demo.models.loading import load_model
    from demo.registry import DEFENSES

    loaded = load_model(model_key)
    s = loaded.image_size
    image = torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(0))
    chosen = {}
    for paradigm in pipeline.PARADIGMS:
        chosen[paradigm.value] = "none"
        for name in DEFENSES.names(lambda c: c.paradigm == paradigm and c.name != "none"):
            try:
                pipeline.run_defenses(loaded, image, ["a", "b"], None, {paradigm: (name, {})})
            except pipeline.USER_ERRORS:
                continue
            chosen[paradigm.value] = name
            break
    return chosen


@pytest.fixture(scope="module")
def app_url(app_model, launch):
    return launch(app_model)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


def _open(browser, url: str, width: int = 1600, height: int = 1000, scheme: str = "light", **options):
    """`options`: more of Playwright's page options (is_mobile, has_touch, ...)."""
    page = browser.new_page(viewport={"width": width, "height": height}, color_scheme=scheme, **options)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#input-image", timeout=TIMEOUT_MS)
    return page


@pytest.fixture(scope="module")
def page(browser, app_url):
    page = _open(browser, app_url)
    yield page
    page.close()


def test_one_click_on_a_fresh_page_shows_the_lesson(browser, app_url, app_model):
    """A teacher opens the page and presses the primary button, nothing else."""
    if app_model != "teaching":
        pytest.skip("the default lesson is made for the teaching model")
    expect = sync_api.expect
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = _open(browser, app_url, 1440, 900)
    expect(page.locator("#model-view img")).to_be_visible()  # what the model sees, next to the upload
    page.screenshot(path=str(ARTIFACTS / "open_desktop.png"))
    page.locator("#run-btn").click()
    expect(page.locator("#timing-table")).to_contain_text("total", timeout=TIMEOUT_MS)
    page.wait_for_timeout(800)  # the smooth scroll to the results
    for i, method in enumerate([None, None, "TeCoA", "R-TPT", "JPEG"]):
        label = page.locator(f"#col-{i}-label [data-testid='label-output-value']")
        expect(label).to_be_in_viewport()
        expect(page.locator(f"#col-{i}-verdict")).to_contain_text(re.compile("correct|wrong"))
        if method:
            expect(page.locator(f"#col-{i}-verdict")).to_contain_text(method)
    # the lesson itself: the attack fools the model, each paradigm's defense gets the label back
    expect(page.locator("#col-1-verdict")).to_contain_text("wrong")
    for i in (0, 2, 3, 4):
        expect(page.locator(f"#col-{i}-verdict")).to_contain_text("correct: cyan triangle")
    page.screenshot(path=str(ARTIFACTS / "lesson_desktop.png"))
    _assert_accessible_images(page)
    _assert_figures_at_natural_size(page)
    page.close()


def _assert_accessible_images(page) -> None:
    """Every picture on screen has a text alternative (screen readers; image buttons take their name from it)."""
    missing = page.evaluate("""() => [...document.querySelectorAll('img')]
        .filter(i => i.getClientRects().length && !(i.getAttribute('alt') || '').trim())
        .map(i => i.closest('[id]')?.id || i.src.slice(-40))""")
    assert not missing, f"images without alt text: {missing}"


def _assert_figures_at_natural_size(page) -> None:
    """Figures are drawn with >= 14 px text (tests/viz/test_readable.py); shrunk, that text would get smaller."""
    page.locator("#timing-chart img").scroll_into_view_if_needed()
    page.wait_for_function("[...document.querySelectorAll('.figure img')].every(i => i.complete && i.naturalWidth)")
    sizes = page.evaluate("""() => [...document.querySelectorAll('.figure img')].filter(i => i.getClientRects().length)
        .map(i => [i.closest('[id]').id, i.naturalWidth, i.getBoundingClientRect().width])""")
    assert len(sizes) >= 3, sizes
    shrunk = [(fid, nat, round(shown)) for fid, nat, shown in sizes if shown < nat - 1]
    assert not shrunk, f"figures shown smaller than drawn (id, natural px, shown px): {shrunk}"


def test_the_whole_flow_works_with_the_keyboard(browser, app_url, app_model):
    """Tab from the top of the page reaches the scenes, the examples and the primary button; Enter runs it."""
    expect = sync_api.expect
    page = _open(browser, app_url, 1440, 900)
    seen = []
    for _ in range(200):
        page.keyboard.press("Tab")
        seen.append(page.evaluate("document.activeElement.closest('[id]')?.id || ''"))
        if seen[-1] == "run-btn":
            break
    assert seen[-1] == "run-btn", f"Tab never reached the Run button; it went through {seen}"
    if app_model == "teaching":
        assert "scene-0" in seen and "examples-teaching" in seen and "labels" in seen, seen
    page.keyboard.press("Enter")
    expect(page.locator("#timing-table")).to_contain_text("total", timeout=TIMEOUT_MS)
    for i in range(N_COLUMNS):
        expect(page.locator(f"#col-{i}-verdict")).to_contain_text(re.compile("correct|wrong"))
    page.close()


def test_stop_says_stopped_and_greys_the_old_results(browser, app_url):
    expect = sync_api.expect
    page = _open(browser, app_url, 1440, 900)
    page.locator("#run-btn").click()
    page.locator("#stop-btn").click()
    expect(page.locator("#run-state")).to_be_visible()
    expect(page.locator("#run-state")).to_contain_text("Stopped")
    expect(page.locator("#results-area")).to_have_class(re.compile("stale"))
    page.locator("#run-btn").click()  # a new run clears both
    expect(page.locator("#run-state")).to_be_hidden()
    expect(page.locator("#results-area")).not_to_have_class(re.compile("stale"))
    page.close()


def test_phone_layout_has_no_sideways_overflow(browser, app_url):
    """The columns stack, the page never scrolls sideways, and figures keep their drawn size (they scroll
    sideways inside their own box instead of shrinking their text)."""
    page = _open(browser, app_url, 390, 844)
    page.wait_for_timeout(500)
    width = page.evaluate("document.documentElement.scrollWidth")
    page.screenshot(path=str(ARTIFACTS / "open_phone.png"), full_page=True)
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"
    page.locator("#run-btn").click()
    sync_api.expect(page.locator("#timing-table")).to_contain_text("total", timeout=TIMEOUT_MS)
    _assert_figures_at_natural_size(page)
    width = page.evaluate("document.documentElement.scrollWidth")
    page.screenshot(path=str(ARTIFACTS / "results_phone.png"), full_page=True)
    page.close()
    assert width <= 390, f"with results, the page is {width} px wide on a 390 px screen"


def test_dark_mode_page(browser, app_url):
    page = _open(browser, app_url + "?__theme=dark", 1440, 900, "dark")
    assert page.evaluate("document.body.classList.contains('dark')")
    page.screenshot(path=str(ARTIFACTS / "open_dark.png"))
    page.close()


# Resolves once the page has not scrolled for a few frames: a dropdown opened during a smooth scroll
# (a run brings the results into view) stays drawn where its input was.
SCROLL_IDLE_JS = """() => new Promise(done => {
  let y = -1, still = 0;
  const look = () => {
    if (window.scrollY === y) { if (++still > 5) return done(); } else { still = 0; y = window.scrollY; }
    requestAnimationFrame(look);
  };
  look();
})"""


def _choose(page, elem_id: str, option_text: str) -> None:
    page.evaluate(SCROLL_IDLE_JS)
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option_text, exact=True).click()


def test_compare_in_the_browser(page, app_model):
    from demo.registry import ATTACKS, DEFENSES

    expect = sync_api.expect
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    example = ROOT / "assets" / "examples" / ("teaching_blue_heart.png" if app_model == "teaching" else "photo_apple.png")
    page.locator("#input-image input[type=file]").set_input_files(str(example))
    expect(page.locator("#col-0-label [data-testid='label-output-value']")).to_be_visible()

    if "pgd" in ATTACKS:
        _choose(page, "attack", ATTACKS.get("pgd").title)
    steps = page.locator("#steps input[type=number]")
    if steps.is_visible():
        steps.fill("10")
        steps.press("Enter")
    chosen = _working_defenses(app_model)
    for paradigm, name in chosen.items():
        if name != "none":
            _choose(page, f"defense-{paradigm}", DEFENSES.get(name).title or name)

    page.locator("#run-btn").click()
    expect(page.locator("#timing-table")).to_contain_text("total", timeout=TIMEOUT_MS)
    for i in range(N_COLUMNS):
        label = page.locator(f"#col-{i}-label [data-testid='label-output-value']")
        expect(label).to_be_visible()
        assert label.inner_text().strip(), f"column {i} shows no label"
        expect(page.locator(f"#col-{i}-verdict")).to_contain_text(re.compile("correct|wrong"))
        expect(page.locator(f"#col-{i}-image img")).to_be_visible()
    table = page.locator("#timing-table").inner_text()
    assert re.search(r"attack", table) and re.search(r"\d+\.\d", table), table
    for figure in ("#timing-chart img", "#heatmap img"):  # lazily loaded: bring them into view first
        page.locator(figure).scroll_into_view_if_needed()
        expect(page.locator(figure)).to_be_visible()
    expect(page.locator("#summary")).to_contain_text("Largest pixel change")
    # What each defense did, in words, and the cost said before running.
    if chosen.get("test-time") in ("tpt", "rtpt"):
        expect(page.locator("#summary")).to_contain_text(re.compile(r"Made \d+ views .* kept the \d+ most"))
    if chosen.get("training-free") == "ttc":
        expect(page.locator("#summary")).to_contain_text(re.compile("tau [0-9.]+, (below|at or above) the threshold"))
    expect(page.locator("#cost-estimate")).to_contain_text("Cost of")
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)


def test_bad_input_shows_a_message(page):
    expect = sync_api.expect
    labels = page.locator("#labels textarea")
    labels.fill("only one label")
    page.locator("#classify-btn").click()
    expect(page.get_by_test_id("toast-body").first).to_contain_text("at least two", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "bad_input.png"))


def test_learn_tab(page):
    expect = sync_api.expect
    page.get_by_role("tab", name="Learn").click()
    expect(page.locator("#walkthrough")).to_be_visible()
    expect(page.get_by_text("Training-time defenses")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "learn.png"), full_page=True)


def _setup(page) -> dict:
    return {"attack": page.locator("#attack input").input_value(),
            "eps": page.locator("#eps input[type=number]").input_value(),
            "mode": page.locator("#mode input:checked").input_value(),
            "training-free": page.locator("#defense-training-free input").input_value(),
            "test-time": page.locator("#defense-test-time input").input_value()}


def test_a_shared_link_reopens_the_same_setup(browser, app_url, app_model):
    from demo.registry import ATTACKS, DEFENSES

    if app_model != "teaching":
        pytest.skip("links name teaching-world examples")
    expect = sync_api.expect
    page = _open(browser, app_url + "?example=teaching_red_star&attack=fgsm&eps=8&mode=adaptive"
                                    "&training-free=median&test-time=none&seed=3")
    expect(page.locator("#attack input")).to_have_value(ATTACKS.get("fgsm").title)
    expect(page.locator("#eps input[type=number]")).to_have_value("8")
    expect(page.locator("#defense-training-free input")).to_have_value(DEFENSES.get("median").title)
    expect(page.locator("#col-0-verdict")).to_contain_text("red star")  # the example was loaded and classified
    before = _setup(page)
    assert before["mode"] == "adaptive" and before["test-time"] == DEFENSES.get("none").title
    page.get_by_role("button", name=re.compile("Share this setup")).click()  # unfold it
    page.locator("#share-btn").click()
    link = page.locator("#share-link textarea")
    expect(link).to_have_value(re.compile(r"^http.*\?.*example=teaching_red_star"))
    again = _open(browser, link.input_value())
    expect(again.locator("#attack input")).to_have_value(ATTACKS.get("fgsm").title)
    expect(again.locator("#col-0-verdict")).to_contain_text("red star")
    assert _setup(again) == before
    # a hand-edited link cannot set what the page does not offer
    odd = _open(browser, app_url + "?attack=rm-rf&eps=9999&training-free=tecoa&example=../../etc/passwd")
    expect(odd.locator("#attack input")).to_have_value(ATTACKS.get("pgd").title)
    expect(odd.locator("#defense-training-free input")).to_have_value(DEFENSES.get("jpeg").title)
    for p in (page, again, odd):
        p.close()


def test_each_lesson_scene_runs_and_shows_its_claim(browser, app_url, app_model):
    from demo.models.zoo import ZOO
    from demo.ui.scenes import SCENES

    if app_model != "teaching":
        pytest.skip("the scenes are made for the teaching model")
    expect = sync_api.expect
    columns = {"clean": 0, "attacked": 1, "training-time": 2, "test-time": 3, "training-free": 4}
    for i, scene in enumerate(SCENES):
        if i < 2:  # on the ViT the numbers are labelled as the ResNet's, and the scene says whether it shows
            # The model is chosen before the scene: a scene scrolls smoothly to the results, and a
            # dropdown opened during that scroll is left drawn where the input used to be.
            other = _open(browser, app_url, 1440, 900)
            _choose(other, "model", ZOO["teaching-vit"].label)
            other.locator(f"#scene-{i}").click()
            expect(other.locator("#scene-note")).to_contain_text("Measured on the ResNet teaching model")
            expect(other.locator("#scene-note")).to_contain_text(
                "shows the same" if "teaching-vit" in scene.holds_on else "does not show what it says")
            other.close()
        page = _open(browser, app_url, 1440, 900)  # empty results: a verdict appears only once the run is done
        page.locator(f"#scene-{i}").click()
        expect(page.locator("#scene-note")).to_contain_text(scene.notice)
        expect(page.locator("#scene-note")).not_to_contain_text("measured on the ResNet")  # the model it was measured on
        for changes, column, correct in scene.claims:
            if not changes:
                expect(page.locator(f"#col-{columns[column]}-verdict")).to_contain_text(
                    "correct" if correct else "wrong", timeout=TIMEOUT_MS)
        expect(page.locator("#col-0-label [data-testid='label-output-value']")).to_be_in_viewport()
        if i == 0:
            page.screenshot(path=str(ARTIFACTS / "scene_tiny_change.png"))
        page.close()


def test_columns_stream_in_as_each_stage_is_done(browser, app_url):
    """The clean column is on screen before the comparison ends (streamed), not all at once at the end."""
    expect = sync_api.expect
    page = _open(browser, app_url, 1440, 900)
    page.evaluate("""() => {
      window.__seen = {};
      const mark = (key, ok) => { if (ok && !(key in window.__seen)) window.__seen[key] = performance.now(); };
      new MutationObserver(() => {
        mark('clean', /correct|wrong/.test(document.querySelector('#col-0-verdict')?.innerText || ''));
        mark('pending', /computing/.test(document.querySelector('#col-5-verdict')?.innerText || ''));
        mark('total', /total/.test(document.querySelector('#timing-table')?.innerText || ''));
      }).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""")
    page.locator("#run-btn").click()
    expect(page.locator("#timing-table")).to_contain_text("total", timeout=TIMEOUT_MS)
    seen = page.evaluate("window.__seen")
    page.close()
    assert {"clean", "pending", "total"} <= set(seen), seen
    assert seen["clean"] < seen["total"], f"the clean column only appeared with the final result: {seen}"


def test_presenter_mode_from_the_url_and_the_toggle(browser, app_url, app_model):
    expect = sync_api.expect
    page = _open(browser, app_url + "?presenter=1", 1440, 900)
    expect(page.locator("body")).to_have_class(re.compile("presenter"))
    expect(page.locator("#labels-panel")).to_be_hidden()   # fewer controls
    expect(page.locator("#run-btn")).to_be_visible()
    size = page.evaluate("parseFloat(getComputedStyle(document.querySelector('.gradio-container')).fontSize)")
    assert size >= 18, f"presenter type is {size} px"
    page.screenshot(path=str(ARTIFACTS / "presenter.png"))
    if app_model == "teaching":
        page.locator("#presenter-btn").click()  # and back
        expect(page.locator("#labels-panel")).to_be_visible()
    page.close()


def test_step_scrubber(browser, app_url):
    expect = sync_api.expect
    page = _open(browser, app_url, 1440, 900)
    page.get_by_role("button", name=re.compile("Watch the attack work")).click()
    page.locator("#steps-btn").click()
    expect(page.locator("#steps-caption")).to_contain_text("Step 10 of 10", timeout=TIMEOUT_MS)
    number = page.locator("#steps-slider input[type=number]")
    number.fill("3")
    number.press("Enter")
    expect(page.locator("#steps-caption")).to_contain_text("Step 3 of 10")
    expect(page.locator("#steps-frame img")).to_be_visible()
    page.locator("#steps-chart img").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "steps.png"))
    page.close()


def test_the_browser_collects_parameters_as_the_server_does(browser):
    """The Run buttons read the parameter controls in the browser (no round trip); the server's estimate
    reads them in Python. Both must send the same JSON for the same controls."""
    import json
    from types import SimpleNamespace

    from demo.pipeline import PARADIGMS
    from demo.ui import wiring

    groups = [SimpleNamespace(kind=k, owner=o, controls=dict.fromkeys(names)) for k, o, names in [
        ("attack", "pgd", ["alpha", "random_start"]), ("attack", "cw", ["c"]), ("defense", "jpeg", ["quality"]),
        ("defense", "tpt", ["views", "lr", "kept"]), ("defense", "median", [])]]
    page = SimpleNamespace(param_groups=groups, attack=None, defenses=dict.fromkeys(PARADIGMS), attack_json=None,
                           defense_json=None)
    collect, _, _ = wiring._collector(page)
    tab = browser.new_page()
    values = [0.5, True, 3, 75, 64, 0.005, "0.1"]
    for chosen in (["pgd", "none", "tpt", "jpeg"], ["cw", "tecoa", "none", "median"], ["fgsm", "none", "none", "none"]):
        in_python = [json.loads(s) for s in collect(*chosen, *values)]
        in_browser = [json.loads(s) for s in tab.evaluate(f"(args) => ({wiring.collect_js(page)})(...args)",
                                                          chosen + values)]
        assert in_browser == in_python, chosen
    assert in_python != [{}, {}] or chosen[0] == "fgsm"
    tab.close()


def _run_all(page, clean: str | None = None) -> None:
    """Press the primary button and wait until the whole comparison is on the page. `clean`: text of the
    new clean verdict, needed when results of an earlier run are still on the page."""
    page.locator("#run-btn").click()
    if clean:
        sync_api.expect(page.locator("#col-0-verdict")).to_contain_text(clean, timeout=TIMEOUT_MS)
    sync_api.expect(page.locator("#timing-table")).to_contain_text("total", timeout=TIMEOUT_MS)
    # The strip is emptied by a new image and filled column by column: every column finished means this run is done.
    sync_api.expect(page.locator("#verdict-strip .strip-item:not(.pending)")).to_have_count(N_COLUMNS, timeout=TIMEOUT_MS)


def _verdict_texts(page) -> list[str]:
    """Every verdict on the page: every column's and the strip's (with its note)."""
    return page.evaluate("""() => [...document.querySelectorAll(
        '[id^="col-"][id$="-verdict"], #verdict-strip .strip-item, #verdict-strip .strip-note')]
        .map(e => e.textContent)""")


def test_a_photo_on_the_teaching_model_is_not_judged(browser, app_url, app_model, tmp_path):
    """The teaching model only knows coloured shapes: for a real photo the page warns above the results and
    judges no answer right or wrong (it cannot know the photo's class, so "correct" would be a lie)."""
    from demo.world.outside import portrait

    if app_model != "teaching":
        pytest.skip("the out-of-world warning belongs to the teaching model")
    expect = sync_api.expect
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    photo = tmp_path / "portrait.png"
    portrait().save(photo)
    page = _open(browser, app_url, 1440, 900)
    page.locator("#input-image input[type=file]").set_input_files(str(photo))
    expect(page.locator("#world-note")).to_contain_text("not from the teaching world", timeout=TIMEOUT_MS)
    _run_all(page)
    page.wait_for_timeout(800)  # the smooth scroll to the results
    expect(page.locator("#world-note")).to_be_visible()
    expect(page.locator("#world-note")).to_contain_text("not from the teaching world")
    for i in range(N_COLUMNS):
        expect(page.locator(f"#col-{i}-verdict")).to_contain_text("not judged")
    texts = _verdict_texts(page)
    assert len(texts) >= 10, texts
    judged = [t for t in texts if re.search("correct|wrong|right", t)]
    assert not judged, f"verdicts that judge a photo the model cannot know: {judged}"
    page.screenshot(path=str(ARTIFACTS / "photo_not_judged_desktop.png"))
    page.close()


def test_an_example_brings_its_true_label(browser, app_url, app_model):
    """The examples' classes are known, so no verdict falls back on "true label assumed = clean prediction":
    neither for the example the page opens with nor for one picked from the gallery."""
    if app_model != "teaching":
        pytest.skip("the teaching-world examples are made for the teaching model")
    expect = sync_api.expect
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = _open(browser, app_url, 1440, 900)
    _run_all(page)
    texts = _verdict_texts(page)
    assert len(texts) >= 10, texts
    assert not [t for t in texts if "assumed" in t], texts
    expect(page.locator("#col-0-verdict")).to_contain_text("cyan triangle")

    page.locator("#examples-teaching .thumbnail-item", has_text="red star").click()
    expect(page.get_by_label("True label")).to_have_value("red star")
    # The new image is classified at once and the old results are cleared; run after that, as a person would.
    expect(page.locator("#col-0-verdict")).to_contain_text("red star", timeout=TIMEOUT_MS)
    expect(page.locator("#verdict-strip .strip-item")).to_have_count(0, timeout=TIMEOUT_MS)
    _run_all(page, clean="red star")
    texts = _verdict_texts(page)
    assert len(texts) >= 10, texts
    assert not [t for t in texts if "assumed" in t], texts
    page.screenshot(path=str(ARTIFACTS / "example_desktop.png"))
    page.close()


def test_on_a_phone_the_verdict_strip_shows_the_whole_lesson_in_one_screen(browser, app_url):
    """Run all on a phone: after the page's own scroll to the results, all six verdicts are on screen at once."""
    expect = sync_api.expect
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = _open(browser, app_url, 390, 844, is_mobile=True, has_touch=True)
    _run_all(page)
    page.wait_for_timeout(1000)  # the smooth scroll to the results
    items = page.locator("#verdict-strip .strip-item")
    expect(items).to_have_count(N_COLUMNS)

    def boxes():
        return [items.nth(i).bounding_box() for i in range(N_COLUMNS)]

    outside = [b for b in boxes() if not (b and b["y"] >= 0 and b["y"] + b["height"] <= 844
                                          and b["x"] >= 0 and b["x"] + b["width"] <= 390)]
    page.screenshot(path=str(ARTIFACTS / "strip_phone.png"))
    assert not outside, f"after Run all, verdicts of the strip off a 390x844 screen: {outside}"
    for i in range(N_COLUMNS):
        text = items.nth(i).inner_text().strip()
        assert re.search(r"\S+.*[\u2714\u2718]\s*\S", text), f"strip item {i} lacks a mark or a label: {text!r}"
    page.close()


def test_a_lesson_scene_quotes_its_measured_number(browser, app_url, app_model):
    """One picture can be luck: the scene's note says what the same lesson gives on many test images."""
    if app_model != "teaching":
        pytest.skip("the scenes are made for the teaching model")
    expect = sync_api.expect
    page = _open(browser, app_url, 1440, 900)
    page.locator("#scene-0").click()
    expect(page.locator("#scene-note")).to_contain_text(re.compile(r"Measured: On \d+ seen test images"))
    expect(page.locator("#timing-table")).to_contain_text("total", timeout=TIMEOUT_MS)  # the scene's run is done
    page.close()
