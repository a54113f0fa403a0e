"""The web demo in a real browser: headless Chromium, driven by selenium, against `hf-ddpm serve`'s app on loopback.

They need Debian's `chromium` and `chromium-driver`; without them the tests skip, saying how to install them (CI
installs them, and there a missing browser fails instead). With HF_DDPM_SCREENSHOT=PATH, a screenshot of the page
mid-denoising is written to PATH, of the model in HF_DDPM_SCREENSHOT_MODEL (a folder or Hub id; default: a tiny one).
"""

import io
import os
import shutil
import threading
import urllib.request

import numpy as np
import PIL.Image
import pytest
import torch

from hf_ddpm.app import build_demo
from hf_ddpm.pipelines import DDPMCFGImg2ImgPipeline
from hf_ddpm.sampling import load_pipeline
from test_app import launched
from test_cli_sample import save_tiny_pipeline

BROWSER, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (BROWSER and DRIVER):
    message = (
        "the browser tests need headless Chromium: install it with "
        "`apt-get install -y chromium chromium-driver` (as root; .ci/run does this in CI)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests, but {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT = 30  # seconds any one thing may take on the page before the test fails
# Records every picture the live image shows, whether the status ever said a run was denoising (the page still shows
# the last run's images until the next one starts), and whether the page ever said it was queued.
# The same for the Edit tab, in edit_frames_seen and edit_denoising_seen.
RECORDER = """
window.frames_seen = [];
window.denoising_seen = false;
window.edit_frames_seen = [];
window.edit_denoising_seen = false;
window.queued = false;
new MutationObserver(() => {
    for (const [live, status, prefix] of [['#live', '#status', ''], ['#edit-live', '#edit-status', 'edit_']]) {
        const image = document.querySelector(live + ' img');
        const frames = window[prefix + 'frames_seen'];
        if (image && image.src && frames.at(-1) !== image.src) frames.push(image.src);
        if (/Denoising: step/.test(document.querySelector(status)?.innerText)) window[prefix + 'denoising_seen'] = true;
    }
    if (/queue/i.test(document.body.innerText)) window.queued = true;
}).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
"""


def new_browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """Three images in the tiny model's size, for the Edit tab."""
    folder = tmp_path_factory.mktemp("examples")
    for index in range(3):
        pixels = np.random.RandomState(index).randint(0, 256, (8, 8), dtype=np.uint8)
        PIL.Image.fromarray(pixels).save(folder / f"example{index}.png")
    return folder


@pytest.fixture(scope="module")
def server(model, examples):
    demo = build_demo(model, device="cpu", max_image_steps=500, examples=str(examples))
    yield launched(demo)
    demo.close()


@pytest.fixture(scope="module")
def browser():
    driver = new_browser()
    yield driver
    driver.quit()


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait(driver, lambda: driver.find_elements(By.ID, "generate"))
    driver.execute_script(RECORDER)


def wait(driver, condition, timeout: float = TIMEOUT):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda _: condition())


def choose_class(driver, name: str) -> None:
    """Empties the Class dropdown, then picks `name` from its list, as a person would."""
    while removes := driver.find_elements(By.CSS_SELECTOR, "#classes .token-remove"):
        removes[0].click()
    field = driver.find_element(By.CSS_SELECTOR, "#classes input")
    field.click()
    field.send_keys(name)
    option = f"#classes li[role=option][aria-label='{name}']"
    wait(driver, lambda: driver.find_elements(By.CSS_SELECTOR, option))[0].click()
    driver.find_element(By.TAG_NAME, "h1").click()  # closes the list


def set_number(driver, element_id: str, value) -> None:
    field = driver.find_element(By.CSS_SELECTOR, f"#{element_id} input[type=number]")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(value), Keys.TAB)


def final_images(driver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, "#final img")


def generate(driver, count: int) -> list[bytes]:
    """Clicks Generate and waits for `count` final images; returns their files' bytes, downloaded as a person would
    download them."""
    driver.execute_script("window.frames_seen = []; window.denoising_seen = false;")
    driver.find_element(By.ID, "generate").click()
    # This run's images: it has been seen denoising, and its final status and images have replaced the grid.
    wait(
        driver,
        lambda: (
            driver.execute_script("return window.denoising_seen;")
            and len(final_images(driver)) == count
            and "images," in status_text(driver)
        ),
    )
    return [urllib.request.urlopen(image.get_attribute("src"), timeout=10).read() for image in final_images(driver)]


def status_text(driver) -> str:
    return driver.find_element(By.ID, "status").text


def test_a_class_is_chosen_and_generate_shows_the_grid_being_denoised_then_the_final_images(server, browser):
    open_page(browser, server)
    choose_class(browser, "Bag")
    set_number(browser, "images", 3)
    files = generate(browser, count=3)
    frames = browser.execute_script("return window.frames_seen;")
    assert len(frames) >= 3  # at least two grids while denoising, then the final grid
    assert status_text(browser) == "3 images, 20 steps of DDPM, guidance 3"
    sizes = browser.execute_script(
        "return [...document.querySelectorAll('#final img')].map(i => [i.naturalWidth, i.naturalHeight]);"
    )
    assert sizes == [[8, 8]] * 3  # the model's resolution
    assert all(data.startswith(b"\x89PNG") for data in files)
    # The seed makes a second run identical; another seed does not.
    assert generate(browser, count=3) == files
    browser.find_element(By.ID, "random-seed").click()
    wait(browser, lambda: browser.find_element(By.CSS_SELECTOR, "#seed input").get_attribute("value") != "0")
    assert generate(browser, count=3) != files


def test_a_bad_value_shows_an_error_on_the_page(server, browser):
    open_page(browser, server)
    set_number(browser, "images", 16)  # 2 classes x 16 images x 20 steps: over the server's bound
    browser.find_element(By.ID, "generate").click()
    wait(browser, lambda: "Too much work for one request" in browser.find_element(By.TAG_NAME, "body").text)
    assert "this server allows at most 500" in browser.find_element(By.TAG_NAME, "body").text
    assert not final_images(browser)


def test_two_browsers_at_once_are_both_served_one_after_the_other(server, browser):
    second = new_browser()
    try:
        for driver in (browser, second):
            open_page(driver, server)
            set_number(driver, "images", 8)
        clicks = [threading.Thread(target=driver.find_element(By.ID, "generate").click) for driver in (browser, second)]
        for click in clicks:
            click.start()
        for click in clicks:
            click.join()
        for driver in (browser, second):
            wait(driver, lambda: len(final_images(driver)) == 16 and "images," in status_text(driver))
        # One of them waited in the queue while the other sampled, and was told so.
        assert browser.execute_script("return window.queued;") or second.execute_script("return window.queued;")
    finally:
        second.quit()


def test_cancel_stops_the_run(tmp_path, browser):
    pipe = save_tiny_pipeline(tmp_path)
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, num_train_timesteps=1000)  # long runs
    demo = build_demo(pipe, model_name="tiny", device="cpu", max_image_steps=10**6)
    try:
        open_page(browser, launched(demo))
        set_number(browser, "steps", 1000)
        browser.find_element(By.ID, "generate").click()
        wait(browser, lambda: browser.execute_script("return window.frames_seen.length;") >= 1)
        browser.find_element(By.ID, "cancel").click()
        wait(browser, lambda: status_text(browser) == "Cancelled.")
        wait(browser, lambda: not any(thread.name == "sampling" for thread in threading.enumerate()), timeout=10)
        assert not final_images(browser)
    finally:
        demo.close()


def open_edit_tab(driver, url: str) -> None:
    open_page(driver, url)
    driver.find_element(By.ID, "edit-tab-button").click()
    wait(driver, lambda: driver.find_element(By.ID, "edit").is_displayed())


def upload(driver, button_id: str, path) -> None:
    """Chooses the file `path` for the upload button `button_id`, as a person does in the file dialog."""
    field = driver.find_element(By.XPATH, f"//button[@id='{button_id}']/preceding-sibling::input[@type='file'][1]")
    field.send_keys(str(path))


def edit_status(driver) -> str:
    return driver.find_element(By.ID, "edit-status").text


def choose_edit_class(driver, name: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, "#edit-class input")
    field.click()
    option = f"#edit-class li[role=option][aria-label='{name}']"
    wait(driver, lambda: driver.find_elements(By.CSS_SELECTOR, option))[0].click()


def brush_down_the_right_of_the_middle(driver) -> None:
    """A stroke of the brush down the editor's image, a little right of its middle."""
    canvas = driver.find_element(By.CSS_SELECTOR, "#editor canvas")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", canvas)
    length = canvas.size["height"] // 2
    stroke = ActionChains(driver).move_to_element_with_offset(canvas, 30, -length // 2).click_and_hold()
    stroke.move_by_offset(0, length).release().perform()


def run_edit(driver, done: str) -> bytes:
    """Clicks Edit and waits until this run was seen denoising and its status starts with `done`; returns the file of
    the result, downloaded as a person would download it."""
    driver.execute_script("window.edit_frames_seen = []; window.edit_denoising_seen = false;")
    driver.find_element(By.ID, "edit").click()
    wait(
        driver,
        lambda: driver.execute_script("return window.edit_denoising_seen;") and edit_status(driver).startswith(done),
    )
    [result] = driver.find_elements(By.CSS_SELECTOR, "#edit-result img")
    return urllib.request.urlopen(result.get_attribute("src"), timeout=10).read()


def pixels(data: bytes) -> np.ndarray:
    with PIL.Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"))


def test_an_example_is_edited_towards_a_class_live_and_the_result_downloaded(server, browser, model, examples):
    open_edit_tab(browser, server)
    browser.find_elements(By.CSS_SELECTOR, "#edit-examples .thumbnail-item")[1].click()
    wait(browser, lambda: edit_status(browser) == "Loaded the example 'example1'.")
    choose_edit_class(browser, "Bag")
    data = run_edit(browser, "Edited towards Bag at strength 0.8")
    assert len(browser.execute_script("return window.edit_frames_seen;")) >= 3  # previews, then the result's row
    # The model's size, and the edit that the pipeline makes of the example with the page's settings.
    assert data.startswith(b"\x89PNG") and pixels(data).shape == (8, 8)
    with PIL.Image.open(examples / "example1.png") as source:
        edit = DDPMCFGImg2ImgPipeline.from_pipe(load_pipeline(model, device="cpu"))
        expected = edit(
            source,
            "Bag",
            strength=0.8,
            guidance_scale=3.0,
            num_inference_steps=20,
            generator=[torch.Generator().manual_seed(0)],
        ).images[0]
    np.testing.assert_array_equal(pixels(data), np.asarray(expected))


def test_an_uploaded_image_is_inpainted_where_it_was_brushed_after_a_bad_upload_was_refused(server, browser, tmp_path):
    open_edit_tab(browser, server)
    PIL.Image.new("L", (16, 16)).save(tmp_path / "large.png")
    upload(browser, "edit-upload", tmp_path / "large.png")
    wait(
        browser,
        lambda: "Image is 16x16; this model takes 8x8 images." in browser.find_element(By.TAG_NAME, "body").text,
    )
    # The page keeps working: the next upload is taken.
    source = np.random.RandomState(7).randint(0, 256, (8, 8), dtype=np.uint8)
    PIL.Image.fromarray(source).save(tmp_path / "shirt.png")
    upload(browser, "edit-upload", tmp_path / "shirt.png")
    wait(browser, lambda: edit_status(browser) == "Loaded 'shirt.png'.")
    browser.find_element(By.XPATH, "//*[@id='edit-mode']//label[contains(., 'Inpaint')]").click()
    wait(browser, lambda: browser.find_element(By.ID, "mask").is_displayed())
    brush_down_the_right_of_the_middle(browser)
    result = pixels(run_edit(browser, "Filled towards T-shirt: 20 DDPM steps"))
    kept = result == source
    assert kept[:, :3].all() and not kept.all()  # the left, never brushed, is the source's to the byte; the rest filled


@pytest.mark.skipif(not os.environ.get("HF_DDPM_SCREENSHOT"), reason="set HF_DDPM_SCREENSHOT=PATH to write one")
def test_screenshot_of_the_page_mid_denoising(tmp_path, browser):
    model = os.environ.get("HF_DDPM_SCREENSHOT_MODEL") or str(save_tiny_pipeline(tmp_path) and tmp_path)
    demo = build_demo(model, device="cpu")
    try:
        open_page(browser, launched(demo))
        browser.set_window_size(1280, 1000)
        set_number(browser, "images", 8)
        set_number(browser, "steps", 200)
        browser.find_element(By.ID, "generate").click()
        # Three quarters of the way, where the digits come out of the noise.
        wait(browser, lambda: len(browser.execute_script("return window.frames_seen;")) >= 7)
        browser.execute_script("window.scrollTo(0, 0);")
        assert "Denoising: step" in status_text(browser)
        browser.save_screenshot(os.environ["HF_DDPM_SCREENSHOT"])
        wait(browser, lambda: "images," in status_text(browser), timeout=120)
    finally:
        demo.close()


@pytest.mark.skipif(
    not os.environ.get("HF_DDPM_EDIT_SCREENSHOT"), reason="set HF_DDPM_EDIT_SCREENSHOT=PATH to write one"
)
def test_screenshot_of_the_edit_tab_after_an_inpainting(browser, model, examples):
    """With HF_DDPM_SCREENSHOT_MODEL and HF_DDPM_SCREENSHOT_EXAMPLES (a folder of its real images; the second one is
    filled towards HF_DDPM_SCREENSHOT_CLASS where the brush went)."""
    demo = build_demo(
        os.environ.get("HF_DDPM_SCREENSHOT_MODEL") or model,
        device="cpu",
        examples=os.environ.get("HF_DDPM_SCREENSHOT_EXAMPLES") or str(examples),
    )
    try:
        open_edit_tab(browser, launched(demo))
        browser.set_window_size(1280, 1000)
        browser.find_elements(By.CSS_SELECTOR, "#edit-examples .thumbnail-item")[1].click()
        wait(browser, lambda: edit_status(browser).startswith("Loaded the example"))
        if os.environ.get("HF_DDPM_SCREENSHOT_CLASS"):
            choose_edit_class(browser, os.environ["HF_DDPM_SCREENSHOT_CLASS"])
        browser.find_element(By.XPATH, "//*[@id='edit-mode']//label[contains(., 'Inpaint')]").click()
        wait(browser, lambda: browser.find_element(By.ID, "mask").is_displayed())
        set_number(browser, "edit-steps", 50)
        set_number(browser, "jump-samples", 5)
        brush_down_the_right_of_the_middle(browser)
        run_edit(browser, "Filled")
        browser.execute_script("window.scrollTo(0, 0);")
        browser.save_screenshot(os.environ["HF_DDPM_EDIT_SCREENSHOT"])
    finally:
        demo.close()
