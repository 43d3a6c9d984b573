// Publishes to Earshot's /whip from headless Chromium with the page snippet Earshot
// serves (/whip/publisher.js), as a softphone would: MODE=single sends the fake
// microphone (WAV) as the rep; MODE=pair adds a second session, a 440 Hz tone as the
// customer, with the same call key. Waits SECONDS, deletes, prints a JSON summary.
// Run it inside a network namespace with only loopback (the test does).
import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const { BASE, TOKEN, CALL, MODE, WAV, SECONDS } = process.env;
const args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--allow-loopback-in-peer-connection",
  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", `--use-file-for-fake-audio-capture=${WAV}`,
  "--autoplay-policy=no-user-gesture-required"];
const ctx = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "earshot-chromium-")), {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args,
});
const errors = [];
try {
  const page = await ctx.newPage();
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${BASE}/healthz`);
  const result = await page.evaluate(async ({ token, call, mode, seconds }) => {
    const { publish } = await import("/whip/publisher.js");
    const connected = (pc) => new Promise((resolve, reject) => {
      const check = () => {
        if (pc.connectionState === "connected") resolve(performance.now());
        if (pc.connectionState === "failed") reject(new Error("peer connection failed"));
      };
      pc.addEventListener("connectionstatechange", check);
      check();
    });
    const mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
    const rep = await publish({ url: `/whip?call=${call}&party=rep&campaign=whip-test`, token, tracks: mic.getAudioTracks() });
    const t0 = await connected(rep.pc);
    let customer = null;
    if (mode === "pair") {
      const ac = new AudioContext();
      await ac.resume();
      const osc = ac.createOscillator();
      osc.frequency.value = 440;
      const gain = ac.createGain();
      gain.gain.value = 0.3;
      const dest = ac.createMediaStreamDestination();
      osc.connect(gain).connect(dest);
      osc.start();
      customer = await publish({ url: `/whip?call=${call}&party=customer`, token, tracks: dest.stream.getAudioTracks() });
      await connected(customer.pc);
    }
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const stats = [];
    for (const s of [rep, customer].filter(Boolean)) {
      const report = await s.pc.getStats();
      report.forEach((v) => { if (v.type === "outbound-rtp") stats.push(v.packetsSent); });
    }
    const t1 = performance.now();
    await rep.stop();
    if (customer) await customer.stop();
    return { published_ms: t1 - t0, locations: [rep.location, customer && customer.location], packets_sent: stats };
  }, { token: TOKEN, call: CALL, mode: MODE || "single", seconds: Number(SECONDS || 10) });
  console.log(JSON.stringify({ ...result, errors }));
} finally {
  await ctx.close();
}
