// Drives headless Chromium (Debian's) against a running Earshot: the rep overlay and the
// manager's team view, during a live call the test replays. Prints `ready` once both
// pages are connected, then a JSON summary; screenshots go to $OUT.
import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const { BASE, REP_TOKEN, MANAGER_TOKEN, OUT, REP_ID } = process.env;
const args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"];
const ctx = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "earshot-chromium-")), {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args, viewport: { width: 1400, height: 860 },
});
const errors = [];
// The rep page's websocket goes through a route, so the test can cut it mid-call and watch
// the page reconnect with `resume=` by itself.
const repSockets = [];
const open = async (token, routed) => {
  const page = await ctx.newPage();
  if (routed) {
    await page.routeWebSocket(/\/live/, (ws) => {
      repSockets.push({ route: ws, url: ws.url() });
      ws.connectToServer();
    });
  }
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(`${BASE}/overlay#token=${token}`);
  await page.waitForSelector("#conn.live", { timeout: 15000 });
  return page;
};
try {
  const rep = await open(REP_TOKEN, true);
  const team = await open(MANAGER_TOKEN, false);
  console.log("ready");
  // The rep: live transcript lines, the competitor hint card, then the scorecard.
  // First words on screen: drop the connection (as a flaky Wi-Fi would).
  await rep.waitForSelector(".line", { timeout: 60000 });
  await repSockets[0].route.close({ code: 1006 });
  await rep.waitForSelector(".line.customer", { timeout: 60000 });
  await rep.waitForSelector('.hint-card[data-kind="competitor"]', { timeout: 60000 });
  await rep.screenshot({ path: join(OUT, "overlay-rep-live.png") });
  // The manager: the call appears in the team view with the rep's name, and opens.
  await team.waitForSelector(".call-item", { timeout: 30000 });
  const teamCalls = await team.$$eval(".call-item", (els) => els.map((e) => e.textContent));
  await team.click(".call-item");
  await team.waitForSelector(".line", { timeout: 30000 });
  await rep.waitForSelector("#scorecard:not([hidden])", { timeout: 60000 });
  await team.waitForSelector("#scorecard:not([hidden])", { timeout: 60000 });
  await rep.screenshot({ path: join(OUT, "overlay-rep-scorecard.png") });
  await team.screenshot({ path: join(OUT, "overlay-team.png") });
  const summary = {
    rep_lines: await rep.$$eval(".line", (els) => els.map((e) => ({ cls: e.className, text: e.querySelector(".text").textContent }))),
    rep_hints: await rep.$$eval(".hint-card", (els) => els.map((e) => e.dataset.kind)),
    rep_score: await rep.textContent("#score"),
    rep_utterances: await rep.$$eval(".line", (els) => els.map((e) => e.dataset.utterance)),
    rep_socket_urls: repSockets.map((s) => s.url.replace(/token=[^&]*/, "token=…")),
    checklist: await rep.$$eval("#checklist li", (els) => els.map((e) => e.className + ":" + e.textContent)),
    team_calls: teamCalls,
    team_title: await team.textContent("#call-title"),
    team_view: await team.textContent("#view-label"),
    team_lines: await team.$$eval(".line", (els) => els.length),
    errors,
    expect_rep: REP_ID,
  };
  console.log(JSON.stringify(summary));
} finally {
  await ctx.close();
}
