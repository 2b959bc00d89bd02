"""The fault suite's report: rounds, failures and provider calls per Trigger, per scenario and provider.

Printed at the end of every run that collected tests/faults (no -s needed), and appended to the file
named by CLOUDTRIGGERS_FAULT_REPORT when it is set.
"""

from __future__ import annotations

from typing import Any

import pytest

from faults import faultkit


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        faultkit.TALLY.failed_tests.append(item.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not faultkit.TALLY.rows and not faultkit.TALLY.failed_tests:
        return
    terminalreporter.section("fault suite")
    for line in faultkit.report_lines():
        terminalreporter.write_line(line)
