// Earshot overlay: one websocket to /live, resumed by seq after any disconnect.
// State per call is rebuilt from events (and `snapshot`s), rendered with textContent only.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; };
  const fmt = (ms) => { const s = Math.max(0, Math.floor((ms || 0) / 1000)); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`; };

  const calls = new Map();   // call_id -> state
  let selected = null;
  let ws = null, retry = 0, me = null, token = null;

  function newCall(id) {
    return { id, last_seq: 0, started: null, startedAt: null, finals: new Map(), partials: new Map(),
             hints: [], metrics: null, checklist: null, ended: null, scorecard: null };
  }

  // ---- token ---------------------------------------------------------------
  function readToken() {
    const frag = new URLSearchParams(location.hash.slice(1));
    if (frag.get("token")) {
      sessionStorage.setItem("earshot.token", frag.get("token"));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem("earshot.token");
  }
  function claims(t) {
    try { return JSON.parse(atob(t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))); } catch { return null; }
  }

  // ---- connection ----------------------------------------------------------
  function setConn(state, label) { const c = $("conn"); c.className = "conn " + state; c.querySelector(".label").textContent = label; }

  function connect() {
    const resume = [...calls.values()].filter((c) => c.last_seq > 0).map((c) => `${c.id}:${c.last_seq}`).join(",");
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    let url = `${proto}//${location.host}/live?token=${encodeURIComponent(token)}`;
    if (resume) url += `&resume=${encodeURIComponent(resume)}`;
    setConn("connecting", retry ? "reconnecting…" : "connecting…");
    ws = new WebSocket(url);
    let opened = false;
    ws.onopen = () => { opened = true; retry = 0; setConn("live", "live"); };
    ws.onmessage = (m) => { try { onMessage(JSON.parse(m.data)); } catch (e) { console.error(e); } };
    ws.onclose = (ev) => {
      setConn("", "offline");
      if (!opened && retry === 0 && ev.code === 1006) {
        // The upgrade was refused (401/403/429): the token is probably bad.
        fetchStatus();
      }
      const wait = Math.min(15000, 500 * 2 ** retry++);
      setTimeout(connect, wait);
    };
  }

  async function fetchStatus() {
    // A plain GET tells why the upgrade failed.
    try {
      const r = await fetch(`/live?token=${encodeURIComponent(token)}`);
      if (r.status === 401 || r.status === 403) { signOut((await r.text()).trim()); }
    } catch { /* network down: keep retrying */ }
  }

  // ---- events --------------------------------------------------------------
  function onMessage(m) {
    switch (m.type) {
      case "hello": return;
      case "pong": case "lagged": case "error": return;
      case "snapshot": {
        const c = newCall(m.call_id);
        calls.set(m.call_id, c);
        for (const e of m.events) apply(c, e);
        c.last_seq = m.last_seq;
        changed(c);
        return;
      }
    }
    if (!m.call_id || m.seq == null) return;
    let c = calls.get(m.call_id);
    if (!c) { c = newCall(m.call_id); calls.set(m.call_id, c); }
    if (m.seq <= c.last_seq) return;   // already have it (resume overlap)
    apply(c, m);
    c.last_seq = m.seq;
    changed(c);
  }

  function apply(c, e) {
    switch (e.type) {
      case "call.started": c.started = e; c.startedAt = Date.parse(e.wall_ts); break;
      case "transcript.partial": c.partials.set(e.channel, e); break;
      case "transcript.final": {
        c.finals.set(e.utterance_id, e);
        const p = c.partials.get(e.channel);
        if (p && p.utterance_id === e.utterance_id) c.partials.delete(e.channel);
        break;
      }
      case "hint": c.hints.push(e); break;
      case "metrics": c.metrics = e; break;
      case "checklist": c.checklist = e; break;
      case "call.ended": c.ended = e; break;
      case "scorecard": c.scorecard = e; c.metrics = Object.assign({}, e.metrics, { type: "metrics" }); break;
    }
  }

  function changed(c) {
    if (!selected || (!calls.get(selected)?.started && c.started) || (calls.get(selected)?.ended && !c.ended)) {
      // Follow the newest live call unless the user picked one.
      if (!userPicked) selected = c.id;
    }
    renderList();
    if (c.id === selected) renderCall();
  }

  // ---- rendering -----------------------------------------------------------
  let userPicked = false;
  const isTeam = () => me && (me.role === "manager" || me.role === "admin");

  function renderList() {
    const ul = $("call-list");
    ul.replaceChildren();
    const list = [...calls.values()].filter((c) => c.started).sort((a, b) => (a.ended ? 1 : 0) - (b.ended ? 1 : 0) || b.startedAt - a.startedAt);
    $("no-calls").hidden = list.length > 0;
    for (const c of list) {
      const li = el("li", "call-item" + (c.id === selected ? " selected" : ""));
      li.dataset.callId = c.id;
      const l1 = el("div", "line1");
      l1.append(el("span", null, isTeam() ? (c.started.rep_id || "unassigned rep") : (c.started.campaign || "Call")));
      const crit = c.hints.filter((h) => h.severity === "critical").length;
      const warn = c.hints.filter((h) => h.severity === "warning").length;
      if (crit) l1.append(el("span", "badge", String(crit)));
      else if (warn) l1.append(el("span", "badge warn", String(warn)));
      const l2 = el("div", "line2");
      const m = c.metrics;
      l2.append(el("span", c.ended ? "ended-tag" : "live-tag", c.ended ? "ended" : "● live"));
      l2.append(el("span", null, m && m.talk_ratio != null ? `talk ${Math.round(m.talk_ratio * 100)}%` : (c.started.campaign || "")));
      li.append(l1, l2);
      li.onclick = () => { selected = c.id; userPicked = true; renderList(); renderCall(); };
      ul.append(li);
    }
  }

  function renderCall() {
    const c = calls.get(selected);
    if (!c || !c.started) return;
    const s = c.started;
    $("call-title").textContent = isTeam() ? `${s.rep_id || "Rep"} — ${s.campaign || "call"}` : (s.campaign || "Call");
    $("call-sub").textContent = `${s.source} · ${new Date(c.startedAt).toLocaleTimeString()}${c.ended ? " · ended (" + c.ended.outcome + ")" : ""}`;
    // Transcript: finals and current partials, in time order.
    const lines = [...c.finals.values(), ...c.partials.values()].sort((a, b) => a.start_ms - b.start_ms);
    const box = $("transcript");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
    box.replaceChildren();
    for (const t of lines) {
      const partial = t.type === "transcript.partial";
      const gap = !!t.untranscribed;
      const row = el("div", `line ${t.channel}${partial ? " partial" : ""}${gap ? " gap" : ""}`);
      row.dataset.utterance = t.utterance_id;
      const b = el("div", "bubble");
      b.append(el("div", "who", `${t.channel === "rep" ? (isTeam() ? "Rep" : "You") : "Customer"} · ${fmt(t.start_ms)}`));
      const txt = el("div", "text");
      if (gap) txt.textContent = "(not transcribed: server overloaded)";
      else if (partial) { txt.append(document.createTextNode(t.stable + " ")); txt.append(el("span", "unstable", t.unstable)); }
      else txt.textContent = t.text;
      b.append(txt);
      row.append(b);
      box.append(row);
    }
    if (atBottom) box.scrollTop = box.scrollHeight;
    // Metrics.
    const m = c.metrics || {};
    const ratio = m.talk_ratio;
    $("g-rep").style.width = ratio != null ? `${ratio * 100}%` : "0";
    $("g-rep-pct").textContent = ratio != null ? `${Math.round(ratio * 100)}%` : "–";
    $("g-cust-pct").textContent = ratio != null ? `${100 - Math.round(ratio * 100)}%` : "–";
    $("m-patience").textContent = m.patience_ms != null ? `${(m.patience_ms / 1000).toFixed(1)} s` : "–";
    $("m-wpm").textContent = m.rep_wpm != null ? `${Math.round(m.rep_wpm)} wpm` : "–";
    $("m-questions").textContent = m.rep_questions ?? 0;
    $("m-interruptions").textContent = m.interruptions ?? 0;
    $("m-story").textContent = m.longest_customer_story_ms ? fmt(m.longest_customer_story_ms) : "–";
    $("m-fillers").textContent = m.rep_fillers ?? 0;
    $("t-monologue").textContent = fmt(m.rep_monologue_ms);
    $("monologue-box").classList.toggle("alert", (m.rep_monologue_ms || 0) >= 45000);
    tickDuration();
    // Checklist.
    const cl = $("checklist");
    cl.replaceChildren();
    const items = (c.checklist && c.checklist.items) || (c.scorecard && c.scorecard.checklist) || [];
    if (!items.length) cl.append(el("li", "muted", "No checklist for this call."));
    const icon = { done: "✓", late: "✓", missed: "✗", pending: "○" };
    for (const i of items) {
      const li = el("li", i.status);
      li.dataset.item = i.id;
      li.append(el("span", "icon", icon[i.status] || "○"), el("span", null, i.label + (i.status === "late" ? " (late)" : "")));
      cl.append(li);
    }
    // Hints, newest first, most severe first among equals.
    const hb = $("hints");
    hb.replaceChildren();
    for (const h of [...c.hints].reverse()) {
      const card = el("div", `hint-card ${h.severity}`);
      card.dataset.kind = h.kind;
      const title = el("div", "h-title");
      title.append(el("span", null, h.title), el("span", "h-kind", h.kind.replace("compliance.", "")));
      card.append(title);
      if (h.body) card.append(el("div", "h-body", h.body));
      card.append(el("div", "h-why", h.reason));
      hb.append(card);
    }
    // Scorecard.
    const sc = c.scorecard;
    $("scorecard").hidden = !sc;
    if (sc) {
      $("score").textContent = Math.round(sc.score);
      const parts = $("score-parts");
      parts.replaceChildren();
      for (const p of sc.parts) {
        const li = el("li");
        li.title = p.reason;
        li.append(el("span", null, p.name.replace("_", " ")), el("span", null, `${Math.round(p.value * 100)}%`));
        parts.append(li);
      }
    }
  }

  function tickDuration() {
    const c = calls.get(selected);
    if (!c || !c.started) return;
    const ms = c.ended ? c.ended.duration_ms : Date.now() - c.startedAt;
    $("t-duration").textContent = fmt(ms);
  }
  setInterval(tickDuration, 1000);

  // Keep the connection warm (the server also pings).
  setInterval(() => { if (ws && ws.readyState === 1) ws.send('{"type":"ping"}'); }, 20000);

  // ---- sign-in ---------------------------------------------------------------
  function signOut(reason) {
    sessionStorage.removeItem("earshot.token");
    if (ws) { ws.onclose = null; ws.close(); }
    $("app").hidden = true; $("signout").hidden = true; $("signin").hidden = false;
    $("signin-error").textContent = reason || "";
  }

  function start() {
    token = readToken();
    if (!token) { $("signin").hidden = false; return; }
    me = claims(token);
    if (!me) { signOut("That is not a token."); return; }
    $("signin").hidden = true; $("app").hidden = false; $("signout").hidden = false;
    $("who").textContent = `${me.sub} · ${me.role}`;
    $("view-label").textContent = isTeam() ? "Team view" : "Live coaching";
    $("calls-title").textContent = isTeam() ? "Team calls" : "Your calls";
    $("monologue-box").querySelector(".k").textContent = isTeam() ? "Rep monologue" : "Your monologue";
    $("g-rep-name").textContent = isTeam() ? "Rep" : "You";
    connect();
  }

  $("signin-form").onsubmit = (e) => {
    e.preventDefault();
    sessionStorage.setItem("earshot.token", $("token-input").value.trim());
    start();
  };
  $("signout").onclick = () => signOut();
  start();
})();
