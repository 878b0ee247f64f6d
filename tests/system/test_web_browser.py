"""The dashboard in a real headless browser: the page goes live, follows tasks as they run, and
its Cancel and Pause buttons act on the scheduler. Every wait is for the DOM to change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from browser_support import chrome
from scheduler_support import Latches, builder

from taskmill import Scheduler, TaskContext, TaskSubmission

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

WAIT_S = 20.0


@pytest.fixture
async def scheduler(tmp_path: Path, latches: Latches) -> AsyncIterator[Scheduler]:
    async def long(ctx: TaskContext) -> None:
        ctx.progress.report(0.1, "starting")
        if await latches[ctx.record.label].wait(ctx):
            ctx.progress.report(0.5, "half way")
            await ctx.token.wait()

    async with await builder(tmp_path, long=long).web_port(0).build() as s:
        yield s


class Page:
    """The browser, driven from a thread so the test's loop stays free."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def do(self, action: Callable[[Any], Any]) -> Any:
        return await asyncio.to_thread(action, self.driver)

    async def until(self, condition: Callable[[Any], Any], what: str) -> Any:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        wait = WebDriverWait(
            self.driver,
            WAIT_S,
            poll_frequency=0.05,
            ignored_exceptions=(StaleElementReferenceException,),
        )
        return await asyncio.to_thread(wait.until, condition, f"the page never showed {what}")

    async def text(self, css: str, what: str) -> str:
        from selenium.webdriver.common.by import By

        def shown(driver: Any) -> str | bool:
            found = driver.find_elements(By.CSS_SELECTOR, css)
            return found[0].text if found and found[0].text else False

        text: str = await self.until(shown, what)
        return text

    async def gone(self, css: str, what: str) -> None:
        from selenium.webdriver.common.by import By

        await self.until(lambda d: not d.find_elements(By.CSS_SELECTOR, css), what)

    async def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        await self.do(lambda d: d.find_element(By.CSS_SELECTOR, css).click())


async def test_the_page_follows_tasks_live_and_cancels_one(
    scheduler: Scheduler, latches: Latches, tmp_path: Path
) -> None:
    assert scheduler.web_url is not None
    with chrome(tmp_path / "profile") as driver:
        page = Page(driver)
        await page.do(lambda d: d.get(scheduler.web_url))
        await page.until(lambda d: d.find_element("id", "state").text == "dispatching", "live")

        outcome = await scheduler.submit(TaskSubmission("long", key="L", label="L"))
        row = f'#running tr[data-task-id="{outcome.id}"]'
        assert "long" in await page.text(row, "the running task")
        await page.until(
            lambda d: d.find_element("css selector", f"{row} .bar em").text == "10.0%",
            "the reported progress",
        )
        latches["L"].release()
        await page.until(
            lambda d: d.find_element("css selector", f"{row} .bar em").text == "50.0%",
            "the progress moving",
        )

        await page.click(f'button.cancel[data-task-id="{outcome.id}"]')
        assert outcome.id is not None
        record = await scheduler.wait_result(outcome.id, timeout=WAIT_S)
        assert record.status == "cancelled"
        await page.gone(row, "the cancelled task leaving the running list")
        status = await page.text(f'#history tr[data-task-id="{outcome.id}"] td:nth-child(4)', "")
        assert status == "cancelled"

        await page.click("#pause")
        await page.until(lambda d: d.find_element("id", "state").text == "paused", "paused")
        assert await scheduler.is_paused()
