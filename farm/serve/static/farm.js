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
    const poster = el("td");
    if (f.files.poster) poster.append(el("img", {class: "poster", src: f.files.poster, alt: "", loading: "lazy"}));
    const title = el("td");
    title.append(el("a", {class: "title", href: f.url}, f.title));
    const state = el("td");
    state.append(el("span", {class: `state st-${f.state}`}, f.state));
    const prog = el("td");
    const meter = el("div", {class: "meter"});
    const percent = f.frames_total ? (100 * f.frames_done) / f.frames_total : 0;
    meter.append(el("div", {style: `width:${percent.toFixed(1)}%`}));
    prog.append(meter, el("span", {class: "progress"}, progress(f)));
    row.append(poster, title, state, prog, el("td", {class: "elapsed"}, seconds(f.elapsed_s)),
      el("td", {class: "eta"}, seconds(f.eta_s)), el("td", {class: "changed"}, when(f.changed)));
    return row;
  }
  function index() {
    const body = document.querySelector("#films tbody");
    listen("/api/events", (data) => {
      const rows = data.films.map(filmRow);
      if (!rows.length) {
        const row = el("tr", {class: "empty"}), cell = el("td", {colspan: 7},
          "No films here yet: farm render writes them into this folder.");
        row.append(cell);
        rows.push(row);
      }
      body.replaceChildren(...rows);
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
      // The player, the contact sheet and the downloads come with the finished film: draw the page anew.
      if (f.state === "done" && shownState !== "done") window.location.reload();
    });
  }
  return {index, film, seconds, when};
})();
