"""``thermoroute report`` of a heatwave run shows the heat (model v1.1), in headless Chromium.

A centralised run of ``australia-heatwave-2020``, whose sites carry plant data: the load
chart of each derated site draws its usable capacity ``u_max · f_t · G`` hour by hour, and
"What temperature-awareness changed" names the hours where the plan held a site at a limit
(Hobart, derated, 12:00–17:00 on the scenario's clock) and lists what every plan puts above
the sites' limits. A v1 run's report has none of it (tests/test_report.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import thermoroute
from tests.test_report import _report, browser  # noqa: F401 (browser: the Chromium fixture)
from thermoroute.common.baselines import SOLVERS

NAME = "australia-heatwave-2020"


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("heatwave") / "central"
    thermoroute.solve(NAME, solver="central", out=run)
    return _report(run)


def test_heatwave_report_shows_the_derated_capacity_and_where_the_heat_bound(
    page: Path,
    browser,  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    for image in browser.find_elements(By.TAG_NAME, "img"):
        loaded = browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", image
        )
        assert loaded, image.get_attribute("alt")
    sites = browser.find_element(By.ID, "sites")
    derated = {
        img.get_attribute("alt")
        for img in sites.find_elements(By.TAG_NAME, "img")
        if "derated" in img.get_attribute("alt")
    }
    # The air-cooled sites whose design dry bulb (35 °C) the day exceeds; towers give none.
    assert derated == {f"site {s}, usable capacity derated" for s in ("mel", "cbr", "hba")}
    assert "u_max × f_t × GPUs" in sites.text and "Hobart (hba) 12:00–17:00" in sites.text
    story = browser.find_element(By.ID, "explanation")
    text = story.text
    assert "Where the heat bound" in text
    assert "Hobart (hba), 12:00–17:00: the plan ran it at its derated cooling capacity" in text
    assert "above that limit in 5 of these hours" in text
    assert "No site reached its grid connection or water allowance in either plan" in text
    tables = story.find_elements(By.TAG_NAME, "table")
    overload = {
        cells[0]: cells[1:]
        for row in tables[-1].find_elements(By.CSS_SELECTOR, "tbody tr")
        for cells in [[td.text for td in row.find_elements(By.TAG_NAME, "td")]]
    }
    assert set(overload) == {"this run", *SOLVERS}
    assert overload["this run"] == ["–", "–", "–"] and overload["central"] == ["–", "–", "–"]
    assert overload["temperature-unaware"][0].startswith("5 h, 9.1 kWh, ")
    assert overload["temperature-unaware"][1:] == ["–", "–"]
