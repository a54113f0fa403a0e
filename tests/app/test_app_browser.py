"""The web demo in a real browser: headless Chromium, driven by selenium, against `hf-ddpm serve`'s app on loopback.

They need Debian's `chromium` and `chromium-driver`; without them the tests skip, saying how to install them (CI
installs them, and there a missing browser fails instead). With HF_DDPM_SCREENSHOT=PATH, a screenshot of the page
mid-denoising is written to PATH, of the model in HF_DDPM_SCREENSHOT_MODEL (a folder or Hub id; default: a tiny one).
"""

import os
import shutil
import threading
import urllib.request

import pytest

from hf_ddpm.app import build_demo
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
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT = 30  # seconds any one thing may take on the page before the test fails
# Records every picture the live image shows, whether the status ever said a run was denoising (the page still shows
# the last run's images until the next one starts), and whether the page ever said it was queued.
RECORDER = """
window.frames_seen = [];
window.denoising_seen = false;
window.queued = false;
new MutationObserver(() => {
    const image = document.querySelector('#live img');
    if (image && image.src && window.frames_seen.at(-1) !== image.src) window.frames_seen.push(image.src);
    if (/Denoising: step/.test(document.querySelector('#status')?.innerText)) window.denoising_seen = true;
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
def server(tmp_path_factory):
    model = tmp_path_factory.mktemp("model")
    save_tiny_pipeline(model)
    demo = build_demo(str(model), device="cpu", max_image_steps=500)
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
