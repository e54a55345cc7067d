// farm serve: keeps the index and film pages live from the server's events (server-sent events).
// Texts from films (titles, prompts, narration) are set with textContent only, never as HTML.
"use strict";
const farm = (() => {
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function seconds(value) {
    if (value === null || value === undefined) return "\u2014";
    value = Math.round(value);
    const pad = (n) => String(n).padStart(2, "0");
    if (value >= 3600) return `${Math.floor(value / 3600)}h ${pad(Math.floor((value % 3600) / 60))}m`;
    if (value >= 60) return `${Math.floor(value / 60)}m ${pad(value % 60)}s`;
    return `${value}s`;
  }
  function when(stamp) {
    if (!stamp) return "\u2014";
    const d = new Date(stamp * 1000), pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function progress(f) {
    return `${f.frames_done}/${f.frames_total} frames, ${f.scenes_done}/${f.scenes_total} scenes done`;
  }
  function setText(id, text) {
    const node = document.getElementById(id);
    if (node && node.textContent !== text) node.textContent = text;
  }
  function setState(node, state) {
    node.textContent = state;
    node.className = `state st-${state}`;
  }
  function listen(url, onData) {
    // EventSource reconnects by itself after an error (the server restarted, the network blinked).
    const source = new EventSource(url);
    source.onmessage = (event) => onData(JSON.parse(event.data));
    return source;
  }

  // --- the index -----------------------------------------------------------------------------
  function filmRow(f) {
    const row = el("tr", {class: "film", "data-name": f.name});
    const title = el("td");
    title.append(el("a", {class: "title", href: f.url}, f.title));
    const prog = el("td"), meter = el("div", {class: "meter"});
    meter.append(el("div"));
    prog.append(meter, el("span", {class: "progress"}));
    const state = el("td");
    state.append(el("span", {class: "state"}));
    row.append(el("td", {class: "poster-cell"}), title, state, prog, el("td", {class: "elapsed"}),
      el("td", {class: "eta"}), el("td", {class: "changed"}));
    return row;
  }
  function updateRow(row, f) {
    // In place: a row keeps its elements (and a person's selection, and what a test holds) as it changes.
    const cell = row.querySelector(".poster-cell") || row.cells[0];
    const img = cell.querySelector("img");
    if (f.files.poster && (!img || img.getAttribute("src") !== f.files.poster)) {
      cell.replaceChildren(el("img", {class: "poster", src: f.files.poster, alt: "", loading: "lazy"}));
    }
    const title = row.querySelector(".title");
    if (title.textContent !== f.title) title.textContent = f.title;
    const state = row.querySelector(".state");
    if (state.textContent !== f.state) setState(state, f.state);
    const percent = f.frames_total ? (100 * f.frames_done) / f.frames_total : 0;
    row.querySelector(".meter div").style.width = `${percent.toFixed(1)}%`;
    row.querySelector(".progress").textContent = progress(f);
    row.querySelector(".elapsed").textContent = seconds(f.elapsed_s);
    row.querySelector(".eta").textContent = seconds(f.eta_s);
    row.querySelector(".changed").textContent = when(f.changed);
  }
  function index() {
    const body = document.querySelector("#films tbody");
    listen("/api/events", (data) => {
      const rows = new Map(Array.from(body.querySelectorAll("tr.film"), (row) => [row.dataset.name, row]));
      const order = data.films.map((f) => {
        const row = rows.get(f.name) || filmRow(f);
        updateRow(row, f);
        rows.delete(f.name);
        return row;
      });
      rows.forEach((row) => row.remove());  // films gone from OUT
      body.querySelectorAll("tr.empty").forEach((row) => row.remove());
      order.forEach((row) => body.append(row));  // newest first; a row already there moves, intact
      if (!order.length) {
        const row = el("tr", {class: "empty"});
        row.append(el("td", {colspan: 7}, "No films here yet: farm render writes them into this folder."));
        body.append(row);
      }
      document.body.dataset.updates = Number(document.body.dataset.updates || 0) + 1;
    });
  }

  // --- a film --------------------------------------------------------------------------------
  function barCells(f) {
    const cells = [];
    for (const s of f.scenes) {
      const where = s.node ? ` on ${s.node}` : "", retried = s.retried ? " retried" : "";
      if (f.per_frame) {
        const written = new Set(s.written || []);
        for (let k = 0; k < s.frames_expected; k++) {
          const kind = written.has(k) ? "written" : s.state, last = k === s.frames_expected - 1 ? " last" : "";
          cells.push(el("span", {class: `cell ${kind}${retried}${last}`,
            title: `scene ${s.index + 1} frame ${k + 1}: ${kind}${where}`}));
        }
      } else {
        const cell = el("span", {class: `cell ${s.state}${retried}`,
          title: `scene ${s.index + 1}: ${s.state}${where}, ${s.frames_written}/${s.frames_expected} frames`});
        const fill = s.frames_expected ? (100 * s.frames_written) / s.frames_expected : 0;
        cell.append(el("i", {style: `height:${fill.toFixed(0)}%`}));
        cells.push(cell);
      }
    }
    return cells;
  }
  function updateScene(s) {
    const row = document.getElementById(`scene-${s.index}`);
    if (!row) return;
    row.dataset.state = s.state;
    setState(row.querySelector(".state"), s.state);
    row.querySelector(".node").textContent = s.node || "";
    row.querySelector(".frames").textContent = `${s.frames_written}/${s.frames_expected}`;
    const thumb = row.querySelector(".thumb");
    if (s.newest) {
      let img = thumb.querySelector("img");
      if (!img) { img = el("img", {alt: ""}); thumb.append(img); }
      if (img.getAttribute("src") !== s.newest) img.setAttribute("src", s.newest);
      img.setAttribute("alt", `frame ${s.newest_frame + 1}`);
    }
  }
  function updateRunning(f) {
    const shots = f.scenes.filter((s) => s.state === "running" && s.newest).map((s) => {
      const figure = el("figure", {"data-scene": s.index});
      figure.append(el("img", {src: s.newest, alt: ""}), el("figcaption", {},
        `scene ${s.index + 1}, frame ${s.newest_frame + 1}/${s.frames_expected}${s.node ? " on " + s.node : ""}`));
      return figure;
    });
    document.getElementById("running").replaceChildren(...shots);
    document.getElementById("workers").replaceChildren(
      ...f.workers.map((w) => el("li", {}, `${w.where} (${w.state})`)));
  }
  function film(name, shownState) {
    listen(`/api/films/${encodeURIComponent(name)}/events`, (f) => {
      setState(document.getElementById("state"), f.state);
      setText("progress", progress(f));
      setText("elapsed", seconds(f.elapsed_s));
      setText("eta", seconds(f.eta_s));
      setText("changed", when(f.changed));
      const bar = document.getElementById("bar");
      bar.replaceChildren(...barCells(f));
      bar.dataset.framesDone = f.frames_done;
      bar.dataset.framesTotal = f.frames_total;
      f.scenes.forEach(updateScene);
      updateRunning(f);
      document.body.dataset.updates = Number(document.body.dataset.updates || 0) + 1;
      // The player, the contact sheet and the downloads come with the finished film: draw the page anew.
      if (f.state === "done" && shownState !== "done") window.location.reload();
    });
  }
  return {index, film, seconds, when};
})();
