"""The dashboard in headless Chromium, driven over WebDriver by Selenium (run by
crates/cerver/tests/dashboard.rs).

Usage: dashboard_browser.py BASE_URL API_KEY MAIL_SPOOL_DIR [--screenshots DIR]

Signs up a new address through the page (the verification link read from the mail spool shows
the key once), signs in through the magic link, creates and revokes a key, watches a sandbox
created through the API (with hostile metadata) appear and kills it, signs out; then the same
pages at a phone-sized viewport. Prints "dashboard browser test: ok" at the end.
"""

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

HOSTILE = '<img src=x onerror="window.__xss=1"><script>window.__xss=1</script>'
PHONE = (390, 844)
DESKTOP = (1280, 900)


def browser(profile: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    return driver


def link_in_spool(spool: Path, to: str, path: str, seen: set) -> str:
    """The newest not yet used `<path>?token=` link in a mail to `to`."""
    for _ in range(100):
        mails = sorted(spool.glob("*.eml"), key=lambda p: p.stat().st_mtime, reverse=True)
        for mail in mails:
            text = mail.read_text(errors="replace").replace("=\r\n", "").replace("=\n", "").replace("=3D", "=")
            if f"to: {to}" not in text.lower():
                continue
            m = re.search(r"https?://[^\s\"<>]+" + re.escape(path) + r"\?token=[A-Za-z0-9_\-]+", text)
            if m and m.group(0) not in seen:
                seen.add(m.group(0))
                return m.group(0)
        time.sleep(0.1)
    raise AssertionError(f"no mail to {to} with a {path} link in {spool}")


def api(base: str, key: str, method: str, path: str, body=None):
    req = urllib.request.Request(
        base + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)


class Run:
    def __init__(self, args):
        self.base, self.key = args.base.rstrip("/"), args.key
        self.spool, self.shots = Path(args.spool), args.screenshots
        self.seen = set()
        self.profile = tempfile.mkdtemp(prefix="cerver-chromium-")
        self.d = browser(self.profile)
        self.wait = WebDriverWait(self.d, 20)

    def shot(self, name: str):
        if self.shots:
            Path(self.shots).mkdir(parents=True, exist_ok=True)
            time.sleep(0.3)
            self.d.save_screenshot(str(Path(self.shots) / f"{name}.png"))

    def by_id(self, id_: str):
        return self.wait.until(EC.visibility_of_element_located((By.ID, id_)))

    def page(self, name: str):
        self.d.get(f"{self.base}/dashboard#{name}")
        self.wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-page") == name)

    def no_xss(self):
        assert self.d.execute_script("return window.__xss === undefined"), "user data ran as code"

    def sign_up(self, email: str) -> str:
        self.d.get(f"{self.base}/dashboard")
        self.by_id("signup-email").send_keys(email)
        self.d.find_element(By.CSS_SELECTOR, "#signup-form button").click()
        self.wait.until(EC.text_to_be_present_in_element((By.ID, "signup-note"), "Check your email"))
        self.d.get(link_in_spool(self.spool, email, "/auth/verify-signup", self.seen))
        key = self.d.find_element(By.TAG_NAME, "pre").text.strip()
        assert key.startswith("sk_trial_"), key
        return key

    def sign_in(self, email: str):
        self.d.get(f"{self.base}/dashboard")
        field = self.by_id("login-email")
        field.send_keys(email)
        field.send_keys(Keys.ENTER)  # the keyboard submits the form
        self.wait.until(EC.text_to_be_present_in_element((By.ID, "login-note"), "sign-in link"))
        self.d.get(link_in_spool(self.spool, email, "/auth/login/verify", self.seen))
        self.wait.until(EC.url_contains("/dashboard"))
        self.wait.until(EC.text_to_be_present_in_element((By.ID, "who"), email))
        cookie = self.d.get_cookie("cerver_session")
        assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Lax", cookie
        assert self.d.execute_script("return document.cookie").find("cerver_session") < 0

    def overview(self, plan: str):
        self.page("overview")
        # Rendered text: the plan is shown capitalised.
        self.wait.until(lambda d: d.find_element(By.ID, "plan-name").text.lower() == plan)
        bars = self.d.find_elements(By.CSS_SELECTOR, "#chart svg rect")
        assert len(bars) == 14, len(bars)

    def keys(self, key: str) -> None:
        self.page("keys")
        rows = lambda: self.d.find_elements(By.CSS_SELECTOR, "#keys-table tbody tr")
        self.wait.until(lambda d: len(rows()) == 1)
        self.by_id("key-name").send_keys("browser <b>key</b>")
        self.d.find_element(By.CSS_SELECTOR, "#key-form button").click()
        new_key = self.by_id("new-key-value").text.strip()
        assert new_key.startswith("sk_trial_") and new_key != key, new_key
        self.wait.until(lambda d: len(rows()) == 2)
        names = [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows()]
        assert "browser <b>key</b>" in names, names  # shown as text
        self.shot("keys")
        # The new key works through the API; the list never shows it again.
        api(self.base, new_key, "GET", "/sandboxes")
        self.d.find_element(By.ID, "new-key-done").click()
        self.d.refresh()
        self.wait.until(lambda d: len(rows()) == 2)
        assert new_key not in self.d.page_source, "a key is shown only once"
        # Revoke it: the confirm dialog is accepted.
        row = next(r for r in rows() if "browser" in r.text)
        row.find_element(By.CSS_SELECTOR, "button.danger").click()
        self.wait.until(EC.alert_is_present()).accept()
        self.wait.until(lambda d: len(rows()) == 1)
        try:
            api(self.base, new_key, "GET", "/sandboxes")
            raise AssertionError("a revoked key still works")
        except urllib.error.HTTPError as e:
            assert e.code == 401, e.code

    def sandboxes(self, key: str):
        sb = api(self.base, key, "POST", "/sandbox", {"metadata": {"note": HOSTILE}})
        sid = sb["sandbox_id"]
        self.page("sandboxes")
        row = (By.CSS_SELECTOR, f'tr[data-sandbox-id="{sid}"]')
        self.wait.until(EC.visibility_of_element_located(row))
        text = self.d.find_element(*row).text
        assert HOSTILE in text.replace("\n", " ") or "onerror" in text, text
        assert "workers" in text and "ready" in text, text
        self.no_xss()
        self.shot("sandboxes")
        return sid, row

    def kill(self, key: str, sid: str, row):
        self.d.find_element(*row).find_element(By.CSS_SELECTOR, "button.danger").click()
        self.wait.until(EC.alert_is_present()).accept()
        self.wait.until(EC.invisibility_of_element_located(row))
        try:
            api(self.base, key, "GET", f"/sandbox/{sid}")
            raise AssertionError("a killed sandbox is still there")
        except urllib.error.HTTPError as e:
            assert e.code == 404, e.code

    def sign_out(self):
        self.d.find_element(By.ID, "logout").click()
        self.by_id("login-form")
        assert self.d.get_cookie("cerver_session") in (None, {}) or not self.d.get_cookie("cerver_session")["value"]

    def desktop(self):
        email = "browser-user@example.com"
        self.d.set_window_size(*DESKTOP)
        self.d.get(f"{self.base}/dashboard")
        self.by_id("login-form")
        self.shot("login")
        key = self.sign_up(email)
        self.shot("signup-key")
        for _ in range(7):  # some usage for the overview's meter and chart
            api(self.base, key, "GET", "/sandboxes")
        self.sign_in(email)
        self.overview("trial")
        today = self.d.find_element(By.ID, "usage-today").text
        assert today == "7", f"today's requests: {today}"
        self.shot("overview")
        self.keys(key)
        sid, row = self.sandboxes(key)
        self.kill(key, sid, row)
        self.page("quickstart")
        assert self.base in self.by_id("qs-curl").text
        self.shot("quickstart")
        self.sign_out()
        return email, key

    def phone(self, email: str, key: str):
        self.d.set_window_size(*PHONE)
        self.d.get(f"{self.base}/dashboard")
        self.by_id("login-form")
        self.shot("phone-login")
        self.sign_in(email)
        self.overview("trial")
        width = self.d.execute_script("return document.documentElement.scrollWidth")
        inner = self.d.execute_script("return window.innerWidth")
        assert width <= inner + 1, f"the page scrolls sideways on a phone: {width} > {inner}"
        self.shot("phone-overview")
        self.page("keys")
        self.shot("phone-keys")
        sid, row = self.sandboxes(key)
        self.shot("phone-sandboxes")
        self.kill(key, sid, row)
        self.page("quickstart")
        self.shot("phone-quickstart")
        self.sign_out()

    def close(self):
        self.d.quit()
        shutil.rmtree(self.profile, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("key")
    p.add_argument("spool")
    p.add_argument("--screenshots")
    run = Run(p.parse_args())
    try:
        email, key = run.desktop()
        run.phone(email, key)
    except Exception:
        if run.shots:
            run.shot("failure")
        raise
    finally:
        run.close()
    print("dashboard browser test: ok")


if __name__ == "__main__":
    sys.exit(main())
