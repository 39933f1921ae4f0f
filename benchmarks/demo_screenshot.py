"""Drive the demo page (app.py) in a real headless browser: start it on loopback, upload two photos, read the result.

    python -m benchmarks.demo_screenshot --model outputs/comface-embedded/model --out docs/demo.png

Without BEFORE/AFTER it renders two faces of one unseen identity with the embedded generator (a weight edit), so the
picture shows no real person. Uses Debian's chromium and chromedriver (`apt-get install chromium chromium-driver`);
nothing is downloaded at run time (Selenium Manager is kept offline). tests/test_demo_browser.py uses the same code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def find_browser() -> tuple[Optional[str], Optional[str]]:
    """(chromium, chromedriver) paths, or None for what is missing."""
    browser = next((p for p in CHROMIUM_CANDIDATES if os.path.exists(p)), shutil.which("chromium"))
    driver = next((p for p in DRIVER_CANDIDATES if os.path.exists(p)), shutil.which("chromedriver"))
    return browser, driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(model: str, port: int, log_path: Path, timeout: float = 180) -> subprocess.Popen:
    """`python app.py --model M --port P` on 127.0.0.1; returns once the page answers."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "COMFACE_DEBUG": "1"}
    log = open(log_path, "w")
    process = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--model", model, "--port", str(port),
                                "--host", "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with status {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise TimeoutError(f"app.py did not answer on port {port} within {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")


def make_driver(browser: str, driver: str, width: int = 1100, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def compare_in_browser(url: str, before: str, after: str, screenshot: str, browser: str, driver_path: str,
                       timeout: float = 120, series: Optional[list] = None) -> str:
    """Open the page, upload the two photos, press Compare, wait for the result; save a screenshot; return the text.

    With ``series`` (photo paths), then also open the series tab, upload them, press Track and return both texts
    (compare result, then the series summary and table, separated by a blank line)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = make_driver(browser, driver_path)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, timeout)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#before input[type=file]")))
        driver.find_element(By.CSS_SELECTOR, "#before input[type=file]").send_keys(str(Path(before).resolve()))
        driver.find_element(By.CSS_SELECTOR, "#after input[type=file]").send_keys(str(Path(after).resolve()))
        # The uploads are shown as images before the button is pressed.
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#before img, #after img")) >= 2)
        driver.find_element(By.CSS_SELECTOR, "#compare").click()
        wait.until(lambda d: any(k in d.find_element(By.CSS_SELECTOR, "#result").text for k in ("Change:", "Error:")))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#aligned-before img, #aligned-after img")) >= 2
                   or "Error:" in d.find_element(By.CSS_SELECTOR, "#result").text)
        time.sleep(0.5)  # let the images paint
        text = driver.find_element(By.CSS_SELECTOR, "#result").text
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(screenshot).with_name(f".{Path(screenshot).name}.tmp.png")
        driver.save_screenshot(str(tmp))
        os.replace(tmp, screenshot)
        if series:
            tab = next(b for b in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if "series" in b.text)
            tab.click()
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#series input[type=file]")))
            driver.find_element(By.CSS_SELECTOR, "#series input[type=file]").send_keys(
                "\n".join(str(Path(p).resolve()) for p in series))
            time.sleep(1.0)  # the upload finishes before the button is pressed
            driver.find_element(By.CSS_SELECTOR, "#track").click()
            wait.until(lambda d: "tracked" in d.find_element(By.CSS_SELECTOR, "#track-summary").text
                       or "Error:" in d.find_element(By.CSS_SELECTOR, "#track-summary").text)
            text += "\n\n" + driver.find_element(By.CSS_SELECTOR, "#track-summary").text
            text += "\n" + driver.find_element(By.CSS_SELECTOR, "#track-table").text
        return text
    finally:
        driver.quit()


def render_pair(folder: Path, size: int = 256) -> tuple[str, str]:
    """Two renders of one unseen identity: as drawn, then heavier (weight alpha 4, an attribute the default trains on)."""
    import torch
    from PIL import Image

    from comface_hf.monitoring.calibration import IDENTITY_OFFSET
    from comface_hf.synthesis import get_generator

    generator = get_generator("embedded", image_size=size, seed=0)
    weight = generator.attribute_index("weight")
    images = generator.render(torch.tensor([IDENTITY_OFFSET + 7] * 2), torch.tensor([weight] * 2),
                              torch.tensor([0.0, 4.0]))
    paths = []
    for name, image in zip(("before.png", "after.png"), images):
        path = folder / name
        Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(path)
        paths.append(str(path))
    return paths[0], paths[1]


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="outputs/comface-embedded/model")
    parser.add_argument("--before")
    parser.add_argument("--after")
    parser.add_argument("--out", default="docs/demo.png")
    args = parser.parse_args()
    browser, driver = find_browser()
    if not browser or not driver:
        raise SystemExit("chromium and chromedriver are needed: sudo apt-get install chromium chromium-driver")
    work = Path(tempfile.mkdtemp(prefix="comface-demo-"))
    before, after = (args.before, args.after) if args.before else render_pair(work)
    port = free_port()
    app = start_app(args.model, port, work / "app.log")
    try:
        text = compare_in_browser(f"http://127.0.0.1:{port}/", before, after, args.out, browser, driver)
    finally:
        app.terminate()
        app.wait(timeout=30)
    print(text)
    print(f"screenshot: {args.out}")


if __name__ == "__main__":
    main()
