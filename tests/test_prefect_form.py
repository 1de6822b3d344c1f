"""The Prefect UI's "Custom run" form in a real browser, as a person uses it: the shipped
prefect.yaml deployed to a Prefect server from infra/, a process worker from infra/ running the
runs in the project's clone, and Debian's chromium clicking through the UI that server serves."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, chromium, free_port
from tests.test_prefect_server import api_client, prefect_servers

pytestmark = pytest.mark.slow

REFUSED = "a run with the same settings is in progress"


class PrefectPerson:
    """A person at the Prefect UI: opens a deployment's Custom run form by clicking through the
    UI, reads its fields by their labels, picks from menus, types numbers, submits. Toasts in
    the way are read and closed, as a person would; what they said is kept in ``toasts``."""

    def __init__(self, driver, url: str, shots: Path):
        self.driver, self.url, self.shots = driver, url, shots
        self.toasts: list[str] = []     # closed because they covered what was to be clicked
        self.requests: dict[str, str] = {}
        self.failed: list[str] = []     # the UI's API calls that failed: status and address

    def wait(self, until, seconds: float = 90, poll: float = 0.25, ignoring=()):
        from selenium.common.exceptions import (NoSuchElementException,
                                                StaleElementReferenceException)
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, seconds, poll_frequency=poll,
                             ignored_exceptions=(NoSuchElementException,
                                                 StaleElementReferenceException,
                                                 *ignoring)).until(until)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.TAG_NAME, "body").text

    def network(self) -> list[str]:
        """The API calls that failed so far (read from the browser's log, which this drains)."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message["method"] == "Network.requestWillBeSent":
                self.requests[params["requestId"]] = params["request"]["url"]
            elif message["method"] == "Network.responseReceived":
                response = params["response"]
                if "/api/" in response["url"] and response["status"] >= 400:
                    self.failed.append(f"{response['status']} {response['url']}")
            elif message["method"] == "Network.loadingFailed":
                url = self.requests.get(params["requestId"], "?")
                if "/api/" in url:
                    self.failed.append(f"{params.get('errorText')} {url}")
        return self.failed

    def close_toasts(self) -> None:
        """Reads each toast on screen and closes it with its ×, newest first, until none is
        left. Toasts stack and slide while they come and go, so one may cover another's × for
        a moment (CI saw that): such a click is tried again, not taken as a failure."""
        from selenium.common.exceptions import ElementClickInterceptedException
        from selenium.webdriver.common.by import By

        def none_left(d):
            shown = [t for t in d.find_elements(By.CSS_SELECTOR, ".p-toast__card")
                     if t.is_displayed()]
            for toast in reversed(shown):
                text = " ".join(toast.text.split())
                try:
                    toast.find_element(By.CSS_SELECTOR, ".p-toast__close-btn").click()
                except ElementClickInterceptedException:
                    continue
                self.toasts.append(text)
            return not shown

        self.wait(none_left, seconds=30)

    def click(self, element) -> None:
        """Scrolled into view and clicked. A toast over it (Prefect's toasts stay while the
        pointer rests on them, so waiting does not help) is read and closed first."""
        from selenium.common.exceptions import ElementClickInterceptedException

        self.network()

        def clicked(d):
            d.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
            try:
                element.click()
                return True
            except ElementClickInterceptedException:
                self.close_toasts()
                return False

        self.wait(clicked, seconds=60, ignoring=(ElementClickInterceptedException,))

    def button(self, label: str):
        """The visible button that reads ``label`` (Prefect's buttons wrap their text in
        comments and divs: matched on the whole text, not on a text node)."""
        from selenium.webdriver.common.by import By

        def find(d):
            return next((b for b in d.find_elements(
                By.XPATH, f"//button[normalize-space(.)='{label}']") if b.is_displayed()), None)

        return self.wait(find)

    def field(self, name: str):
        """The form's property whose label is ``name`` ("strategy (Optional)"): its label,
        description and inputs."""
        from selenium.webdriver.common.by import By

        return self.driver.find_element(
            By.XPATH, "//span[contains(@class, 'schema-form-property__label') and "
                      f"starts-with(normalize-space(.), '{name} ')]"
                      "/ancestor::div[contains(concat(' ', @class, ' '), ' schema-form-property ')][1]")

    def controls(self, name: str) -> list:
        """What a person can set in a property: its visible selects, inputs and buttons (a type
        toggle would show here as buttons before the value's own input)."""
        from selenium.webdriver.common.by import By

        body = self.field(name).find_element(By.CSS_SELECTOR, ".p-label__body")
        return [e for e in body.find_elements(By.CSS_SELECTOR, "select, input, button, textarea")
                if e.is_displayed()]

    def log_in(self, auth: str) -> None:
        """The UI's login page (the server asks who you are, issue 32): the auth string typed
        into its one field, then Enter."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        self.driver.get(f"{self.url}/dashboard")   # sent to the login page
        field = self.wait(lambda d: next((e for e in d.find_elements(By.TAG_NAME, "input")
                                          if e.is_displayed()), None)
                          if "/login" in d.current_url else None)
        self.shot("00-login")
        field.send_keys(auth, Keys.ENTER)
        self.wait(lambda d: "/login" not in d.current_url)
        # a fresh page: the toasts of the calls refused before the login (which stay while the
        # pointer rests on them, over the form's Submit) are gone, as after a person's reload
        self.driver.get(f"{self.url}/dashboard")

    def open_custom_run(self, deployment: str) -> None:
        """Deployments → the deployment → Run → Custom run, as clicked."""
        from selenium.webdriver.common.by import By

        self.driver.get(f"{self.url}/deployments")
        link = self.wait(lambda d: next((a for a in d.find_elements(By.TAG_NAME, "a")
                                         if a.text.strip() == deployment and a.is_displayed()),
                                        None))
        self.click(link)
        self.wait(lambda d: "/deployments/deployment/" in d.current_url)
        self.click(self.button("Run"))
        self.click(self.button("Custom run"))
        self.wait(lambda d: d.current_url.split("?")[0].endswith("/run"))
        # the form is drawn once the deployment's schema has arrived: the strategy's menu
        self.wait(lambda d: self.menu("strategy").is_displayed())

    def menu(self, name: str):
        from selenium.webdriver.common.by import By

        return self.field(name).find_element(By.CSS_SELECTOR, "select:not(.p-native-select__control--placeholder)")

    def number(self, name: str):
        from selenium.webdriver.common.by import By

        return self.field(name).find_element(By.CSS_SELECTOR, "input[type=number]")

    def choose(self, name: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.menu(name)).select_by_visible_text(value)
        self.wait(lambda d: Select(self.menu(name)).first_selected_option.text.strip() == value)

    def type_number(self, name: str, value: int) -> None:
        from selenium.webdriver.common.keys import Keys

        box = self.number(name)
        self.click(box)
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(str(value))
        self.wait(lambda d: self.number(name).get_attribute("value") == str(value))

    def submit(self) -> None:
        self.click(self.button("Submit"))

    def submit_until_scheduled(self) -> None:
        """Submit, as a person does, and again once where the server could not take it:
        Prefect on SQLite answers 503 to a new flow run when its database is locked by another
        run's writes ("database is locked" in its log; SQLite's lock upgrade does not wait),
        and the UI then says "Oops. Something went wrong". Any other failure fails."""
        for attempt in (1, 2):
            self.submit()
            said = self.wait(lambda d: next((w for w in ("scheduled to start", "Something went wrong")
                                             if self.toast_shown(w)), None), seconds=60, poll=0.05)
            if said == "scheduled to start":
                return
            refused = [f for f in self.network() if "create_flow_run" in f]
            assert attempt == 1 and refused and refused[-1].startswith("503 "), self.failed
            print(f"the server answered {refused[-1]}; submitted again")
            self.close_toasts()

    def toast_shown(self, words: str):
        """Prefect's toast that says ``words``, if it is on screen whole now, else None."""
        from selenium.webdriver.common.by import By

        xpath = ("//div[contains(@class, 'p-toast-container')]//*[contains(normalize-space(.), "
                 f"\"{words}\") and not(*[contains(normalize-space(.), \"{words}\")])]")
        for element in self.driver.find_elements(By.XPATH, xpath):
            if element.is_displayed() and self.driver.execute_script(
                    "const r = arguments[0].getBoundingClientRect();"
                    "return r.top >= 0 && r.bottom <= window.innerHeight;", element):
                return element
        return None

    def toast(self, words: str, seconds: float = 60):
        """Waits for Prefect's toast that says ``words`` to be on screen, whole (toasts slide
        in from below and leave after a few seconds: looked for often)."""
        return self.wait(lambda d: self.toast_shown(words), seconds=seconds, poll=0.05)


def _runs(client) -> list:
    return client.read_flow_runs()


def start_people_run(person: PrefectPerson, client, closed_port: int):
    """Deployments → people → Custom run: the oracle and the wait are already people's and a
    suspended one; strategy, rounds and budget set, ``overrides`` typed as JSON; submitted.
    Returns the flow run once it is final."""
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    before = {r.id for r in _runs(client)}
    person.open_custom_run("people")
    person.wait(lambda d: person.number("seed").get_attribute("value") != "")
    assert Select(person.menu("oracle")).first_selected_option.text.strip() == "label_studio"
    assert Select(person.menu("wait")).first_selected_option.text.strip() == "suspend"
    person.choose("strategy", "clue")
    person.type_number("rounds", 2)
    person.type_number("budget", 3)
    (box,) = [e for e in person.controls("overrides") if e.tag_name == "textarea"]
    person.click(box)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(json.dumps({"label_studio.url": f"http://127.0.0.1:{closed_port}"}))
    person.shot("07-people-form-filled")
    person.submit_until_scheduled()
    person.wait(lambda d: len(_runs(client)) == len(before) + 1, seconds=60, poll=1)
    (run,) = [r for r in _runs(client) if r.id not in before]
    deadline = time.time() + 600
    while not run.state.is_final():
        assert time.time() < deadline, run.state
        time.sleep(2)
        run = client.read_flow_run(run.id)
    assert run.parameters["overrides"] == {"label_studio.url": f"http://127.0.0.1:{closed_port}"}
    return run


def test_a_person_starts_the_manual_deployment_from_the_custom_run_form(
        project, tmp_path_factory, tmp_path):
    """As a person in the Prefect UI: the manual deployment's Custom run form shows the strategy
    as a menu at once (no type toggle before it) on params.yaml's value, and the numbers as
    numbers; picking entropy and 1 round and submitting runs exactly that; submitting the same
    form again (a double submit) is refused by the run itself while the first one runs, with
    why; a budget of 0 is refused by Prefect with a visible message and starts nothing. The
    people deployment's form has people as the oracle and a suspended wait chosen, and its run
    gets the settings typed (Label Studio left unreachable: the run stops at its start, saying
    how to start it; tests/test_team_path.py follows such a run to its end).
    Screenshots go to $SAGE_ADA_SCREENSHOTS (default: the test's temporary folder)."""
    import mlflow

    from components.config import load_config

    # The form's defaults: the clone's params.yaml (the project's tiny one here), as deployed.
    FORM = load_config(project / "params.yaml")

    shots = Path(os.environ.get("SAGE_ADA_SCREENSHOTS", tmp_path / "screenshots"))
    for name in ("flows", "components"):
        (project / name).symlink_to(REPO / name)
    shutil.copy(REPO / "prefect.yaml", project / "prefect.yaml")
    store = f"sqlite:///{project / 'mlflow.db'}"
    started = time.monotonic()
    with prefect_servers(tmp_path_factory.mktemp("prefect-form"), worker=True,
                         MLFLOW_TRACKING_URI=store, SAGE_ADA_CLONE=str(project)) as env:
        ui = f"http://127.0.0.1:{env['PREFECT_PORT']}"
        # The UI's pages call the API the server tells them; on any other than its own, a
        # person sees "Can't connect to Server API" (or another server's runs).
        with urllib.request.urlopen(f"{ui}/ui-settings", timeout=30) as answer:
            told = json.load(answer)["api_url"]
        assert told == env["PREFECT_API_URL"], (
            f"the UI at {ui} calls the API at {told}, not its own server's "
            f"{env['PREFECT_API_URL']}: infra/prefect/server.sh starts Prefect with --port but "
            "does not tell it the port (PREFECT_SERVER_API_PORT, or PREFECT_UI_API_URL)")
        deployed = subprocess.run(["prefect", "--no-prompt", "deploy", "--all"], cwd=project,
                                  env=env, capture_output=True, text=True, timeout=300)
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        person = PrefectPerson(chromium(shots, network_log=True), ui, shots)
        try:
            with api_client(env) as client:
                # 0. The UI asks who you are first (issue 32)
                person.log_in(env["PREFECT_API_AUTH_STRING"])
                # 1. The form as it opens: a menu on params.yaml's strategy, numbers as numbers.
                person.open_custom_run("manual")
                person.wait(lambda d: person.number("seed").get_attribute("value") != "")
                person.shot("01-custom-run-form")
                strategy = person.controls("strategy")
                assert [e.tag_name for e in strategy] == ["select"], \
                    "the strategy is not a menu on its own (a type toggle before it?)"
                from selenium.webdriver.support.ui import Select

                menu = Select(person.menu("strategy"))
                assert menu.first_selected_option.text.strip() == "sage" == FORM.active.strategy
                assert {"entropy", "badge", "random"} <= {o.text.strip() for o in menu.options}
                for name, default in (("rounds", max(FORM.active.rounds, 1)),
                                      ("budget", FORM.active.budget), ("seed", FORM.active.seed)):
                    assert [e.get_attribute("type") for e in person.controls(name)] == ["number"], name
                    assert person.number(name).get_attribute("value") == str(default), name
                assert not _runs(client)

                # 2. Entropy, one round, the rest kept: submitted, then the same form again.
                for attempt in (1, 2):
                    if attempt == 2:
                        person.open_custom_run("manual")
                    person.choose("strategy", "entropy")
                    person.type_number("rounds", 1)
                    person.shot(f"0{attempt + 1}-entropy-one-round-filled-{attempt}")
                    person.submit_until_scheduled()   # "scheduled to start", as told
                    person.wait(lambda d: not d.current_url.split("?")[0].endswith("/run"))
                    person.wait(lambda d: len(_runs(client)) == attempt, seconds=60, poll=1)
                person.wait(lambda d: "Flow runs" in person.text())   # the deployment's page
                person.shot("04-after-the-second-submit")

                # 4. A budget of 0: refused with a message the person sees; no run.
                person.open_custom_run("manual")
                person.type_number("budget", 0)
                person.submit()
                message = person.toast("minimum of 1").text
                person.shot("05-budget-0-refused")
                assert "Validation failed for field 'budget'" in message, message
                assert "0 is less than the minimum of 1" in message, message
                assert person.driver.current_url.split("?")[0].endswith("/run")  # still there

                # 3. Both runs final: one ran entropy for a round, the other was refused.
                deadline = time.time() + 900
                while True:
                    runs = _runs(client)
                    if all(r.state.is_final() for r in runs):
                        break
                    assert time.time() < deadline, [(r.name, r.state.name) for r in runs]
                    time.sleep(3)
                assert len(runs) == 2, [(r.name, r.parameters) for r in runs]  # none for budget 0
                for run in runs:
                    assert {k: run.parameters.get(k) for k in ("strategy", "rounds", "budget")} \
                        == {"strategy": "entropy", "rounds": 1, "budget": FORM.active.budget}
                done = [r for r in runs if r.state.is_completed()]
                refused = [r for r in runs if r.state.is_failed()]
                assert len(done) == len(refused) == 1, [(r.state.name, r.state.message)
                                                        for r in runs]
                assert REFUSED in (refused[0].state.message or ""), refused[0].state.message
                # named by what it runs, not by the form's random "Run Name"
                assert done[0].name == f"entropy b={FORM.active.budget} ×1 seed {FORM.active.seed}"

                # What the person sees of it: the deployment's runs, one Completed, one Failed.
                person.driver.get(f"{ui}/deployments/deployment/{runs[0].deployment_id}?tab=Runs")
                person.wait(lambda d: "Completed" in person.text() and "Failed" in person.text())
                person.shot("06-runs-completed-and-refused")

                # 5. The people deployment (issue 35): the same form, people as the oracle and
                # a suspended wait already chosen; any other setting typed into `overrides`.
                # Label Studio is pointed at a closed port, so the run fails at its start with
                # the line that says how to start it, and its parameters are what was typed.
                people = start_people_run(person, client, closed_port=free_port())
                assert people.parameters["oracle"] == "label_studio"
                assert people.parameters["wait"] == "suspend"
                assert {k: people.parameters[k] for k in ("strategy", "rounds", "budget")} \
                    == {"strategy": "clue", "rounds": 2, "budget": 3}
                assert people.state.is_failed(), people.state
                # (no token here, or no server: either way one line that says what to start)
                assert "infra/label-studio/server.sh start" in (people.state.message or ""), \
                    people.state.message
        except BaseException:
            person.shot("failure")
            print(f"toasts closed: {person.toasts}\nAPI calls failed: {person.network()}")
            raise
        else:
            person.network()
        finally:
            person.driver.quit()
    (state,) = list((project / ".sage-ada" / "runs").glob("*/state.json"))
    mlflow.set_tracking_uri(store)
    parent = mlflow.get_run(state.parent.name)
    assert parent.data.params["active.strategy"] == "entropy"
    assert parent.data.params["active.rounds"] == "1"
    print(f"{time.monotonic() - started:.0f} s; screenshots in {shots}; toasts closed on the "
          f"way: {person.toasts}; API calls that failed: {person.failed}")
