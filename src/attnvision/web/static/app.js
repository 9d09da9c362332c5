/* attnvision serve: click-to-segment with Segment Anything.
 *
 * One image at a time. The server keeps the image and its embedding; this page keeps the
 * prompts (points, a box, a phrase when the model takes text), the three candidate masks of
 * the last answer, the objects kept so far, and draws them over the image on stacked canvases:
 *   image-canvas (the pixels, takes the pointer) < auto-layer (segment everything)
 *   < kept-layer (kept objects) < mask-layer (the current mask) < prompt-layer (SVG marks).
 * Every change of the prompts sends them all again (the decoder is fast; no state to drift
 * on the server); answers that arrive after a newer request was sent are dropped.
 * Click-to-mask times (pointer up to the frame showing the mask) are kept in
 * window.attnvision.metrics for tests and benchmarks.
 */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    stage: $("stage"), dropzone: $("dropzone"), dropHint: $("drop-hint"), choose: $("choose"),
    wrap: $("canvas-wrap"), image: $("image-canvas"), auto: $("auto-layer"),
    kept: $("kept-layer"), mask: $("mask-layer"), prompts: $("prompt-layer"),
    upload: $("upload"), imageName: $("image-name"), status: $("status"),
    progress: $("progress"), bar: $("progress-bar"), candidates: $("candidates"),
    promptCount: $("prompt-count"), keptCount: $("kept-count"), undo: $("undo"),
    clear: $("clear"), keep: $("keep"), everything: $("everything"),
    downloadPng: $("download-png"), downloadCoco: $("download-coco"),
    badge: $("model-badge"), noModel: $("no-model"), noModelDetail: $("no-model-detail"),
    limits: $("limits"), textForm: $("text-form"), textInput: $("text-prompt"),
    textSubmit: $("text-submit"), zoom: $("zoom-box"),
  };

  const MASK_RGB = [37, 99, 235];
  const KEPT_RGB = [[245, 124, 0], [22, 163, 74], [168, 85, 247], [236, 72, 153],
                    [13, 148, 136], [234, 179, 8], [220, 38, 38], [99, 102, 241]];
  const POLL_MS = 200;
  const DRAG_PX = 5;

  const state = {
    token: null,
    server: null,          // GET /api/status
    image: null,           // {id, name, width, height}
    imageBitmap: null,
    ready: false,
    points: [],            // {x, y, label}: label 1 object, 0 background
    box: null,             // [x0, y0, x1, y1]
    text: null,            // the phrase Find sent (not what is typed in the field since)
    history: [],           // snapshots for undo
    result: null,          // the last predict answer
    resultZoom: false,     // whether it was a box zoomed in on (one mask)
    bitmaps: [],           // decoded candidate masks of that answer
    selected: 0,
    kept: [],              // {points, box, text, candidate, zoom, bitmap, rgb}
    auto: null,            // {bitmap, count}
    showAuto: false,
    seq: 0,                // the latest prompt request
    done: 0,               // the latest one answered (drawn, failed or not needed)
    pollTimer: null,
    scale: 1,
  };
  const metrics = { clickToMask: [], fetchMs: [], decoderMs: [] };

  // --- small helpers ---------------------------------------------------------------------

  function setStatus(text, kind = "busy") {
    els.status.textContent = text;
    els.status.dataset.state = kind;
  }

  function readyMessage() {
    const named = state.server && state.server.text ? " or name it" : "";
    return `Ready: click the object${named} to segment it.`;
  }

  function setProgress(fraction) {
    els.progress.hidden = fraction === null;
    if (fraction !== null) els.bar.style.width = `${Math.round(fraction * 100)}%`;
  }

  function pngBlob(base64) {
    const text = atob(base64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return new Blob([bytes], { type: "image/png" });
  }

  function saveBlob(blob, name) {
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 30000);
  }

  function stem() {
    const name = state.image ? state.image.name : "image";
    return (name.replace(/\.[^.]+$/, "").replace(/[^A-Za-z0-9._-]+/g, "_") || "image").slice(0, 60);
  }

  const nextFrame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

  function countPixels(canvas) {
    if (!canvas.width || !canvas.height) return 0;
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i]) n++;
    return n;
  }

  window.attnvision = { state, metrics, maskPixels: () => countPixels(els.mask),
                        idle: () => state.done === state.seq };

  // --- the server ----------------------------------------------------------------------------

  async function api(path, { method = "GET", json, form, raw = false } = {}) {
    const headers = {};
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form) {
      body = form;
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body });
    } catch (e) {
      throw new Error("The server cannot be reached: is attnvision serve still running?");
    }
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`;
      try {
        const answer = await response.json();
        if (answer.detail) detail = answer.detail;
      } catch (e) { /* not JSON: keep the status line */ }
      const error = new Error(detail);
      error.status = response.status;
      throw error;
    }
    return raw ? response : response.json();
  }

  // --- mask pictures ---------------------------------------------------------------------------

  const scratch = document.createElement("canvas");
  const scratchCtx = scratch.getContext("2d", { willReadFrequently: true });

  /* A grayscale mask bitmap -> ImageData: the mask tinted, its outline opaque. */
  function tint(bitmap, [r, g, b], fill = 110) {
    const w = bitmap.width, h = bitmap.height;
    scratch.width = w;
    scratch.height = h;
    scratchCtx.clearRect(0, 0, w, h);
    scratchCtx.drawImage(bitmap, 0, 0);
    const src = scratchCtx.getImageData(0, 0, w, h).data;
    const out = new ImageData(w, h);
    const d = out.data;
    for (let y = 0; y < h; y++) {
      const row = y * w;
      for (let x = 0; x < w; x++) {
        const i = row + x;
        if (src[i * 4] < 128) continue;
        const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
          src[(i - 1) * 4] < 128 || src[(i + 1) * 4] < 128 ||
          src[(i - w) * 4] < 128 || src[(i + w) * 4] < 128;
        const o = i * 4;
        d[o] = r; d[o + 1] = g; d[o + 2] = b; d[o + 3] = edge ? 255 : fill;
      }
    }
    return out;
  }

  async function bitmapOf(i) {
    if (!state.bitmaps[i]) state.bitmaps[i] = await createImageBitmap(pngBlob(state.result.masks[i].png));
    return state.bitmaps[i];
  }

  function clearCanvas(canvas) {
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  }

  async function drawSelected(seq) {
    const bitmap = await bitmapOf(state.selected);
    if (seq !== state.seq) return false;
    els.mask.getContext("2d").putImageData(tint(bitmap, MASK_RGB), 0, 0);
    return true;
  }

  function drawKept() {
    const ctx = els.kept.getContext("2d");
    ctx.clearRect(0, 0, els.kept.width, els.kept.height);
    const layer = document.createElement("canvas");
    layer.width = els.kept.width;
    layer.height = els.kept.height;
    for (const k of state.kept) {
      layer.getContext("2d").putImageData(tint(k.bitmap, k.rgb, 95), 0, 0);
      ctx.drawImage(layer, 0, 0);
    }
  }

  function drawAuto() {
    clearCanvas(els.auto);
    if (state.auto && state.showAuto) els.auto.getContext("2d").drawImage(state.auto.bitmap, 0, 0);
    els.everything.classList.toggle("active", state.showAuto);
  }

  function drawPrompts(preview) {
    const svg = els.prompts;
    const ns = "http://www.w3.org/2000/svg";
    svg.replaceChildren();
    const r = 6 / state.scale;
    const boxes = [];
    if (state.box) boxes.push([state.box, "box"]);
    if (preview) boxes.push([preview, "box-in"]);
    for (const [[x0, y0, x1, y1], cls] of boxes) {
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", x0);
      rect.setAttribute("y", y0);
      rect.setAttribute("width", Math.max(0, x1 - x0));
      rect.setAttribute("height", Math.max(0, y1 - y0));
      rect.setAttribute("class", cls);
      svg.appendChild(rect);
      if (cls === "box") {
        const inner = rect.cloneNode();
        inner.setAttribute("class", "box-in");
        svg.appendChild(inner);
      }
    }
    for (const p of state.points) {
      const c = document.createElementNS(ns, "circle");
      c.setAttribute("cx", p.x);
      c.setAttribute("cy", p.y);
      c.setAttribute("r", r);
      c.setAttribute("class", `pt ${p.label ? "pos" : "neg"}`);
      svg.appendChild(c);
    }
  }

  // --- candidates ------------------------------------------------------------------------------

  const candidateButtons = [0, 1, 2].map((i) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "candidate";
    button.disabled = true;
    button.setAttribute("aria-pressed", "false");
    button.dataset.index = String(i);
    const thumb = document.createElement("canvas");
    thumb.width = 120;
    thumb.height = 90;
    const label = document.createElement("span");
    label.className = "label";
    label.innerHTML = `<span>${i + 1}</span><span class="score">–</span>`;
    button.append(thumb, label);
    button.addEventListener("click", () => select(i));
    els.candidates.appendChild(button);
    return button;
  });

  async function drawThumb(i, seq) {
    const canvas = candidateButtons[i].querySelector("canvas");
    const bitmap = await bitmapOf(i);
    if (seq !== state.seq) return;
    const { width: w, height: h } = state.image;
    const s = Math.min(canvas.width / w, canvas.height / h);
    const tw = w * s, th = h * s, ox = (canvas.width - tw) / 2, oy = (canvas.height - th) / 2;
    const tinted = document.createElement("canvas");
    tinted.width = canvas.width;
    tinted.height = canvas.height;
    const t = tinted.getContext("2d");
    t.drawImage(bitmap, ox, oy, tw, th);
    t.globalCompositeOperation = "multiply";
    t.fillStyle = "rgb(90, 150, 255)";
    t.fillRect(0, 0, tinted.width, tinted.height);
    const ctx = canvas.getContext("2d");
    ctx.globalCompositeOperation = "source-over";
    ctx.fillStyle = "#1f2733";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.globalAlpha = 0.55;
    ctx.drawImage(state.imageBitmap, ox, oy, tw, th);
    ctx.globalAlpha = 1;
    ctx.globalCompositeOperation = "screen";
    ctx.drawImage(tinted, 0, 0);
    ctx.globalCompositeOperation = "source-over";
  }

  function renderCandidates(seq) {
    const masks = state.result ? state.result.masks : [];
    candidateButtons.forEach((button, i) => {
      const m = masks[i];
      button.disabled = !m;
      button.setAttribute("aria-pressed", String(!!m && i === state.selected));
      button.querySelector(".score").textContent = m ? m.score.toFixed(3) : "–";
      button.title = m ? `mask ${i + 1}: score ${m.score.toFixed(3)}, ${m.area} px (key ${i + 1})` : "";
      if (m && seq !== undefined) drawThumb(i, seq).catch(() => {});
      if (!m) clearCanvas(button.querySelector("canvas"));
    });
  }

  function describeSelected() {
    const m = state.result.masks[state.selected];
    setStatus(`Mask ${state.selected + 1} of ${state.result.masks.length}: score ` +
              `${m.score.toFixed(3)}, ${m.area.toLocaleString()} px`, "ready");
  }

  async function select(i) {
    if (!state.result || i >= state.result.masks.length) return;
    state.selected = i;
    const seq = state.seq;
    renderCandidates();
    if (await drawSelected(seq)) describeSelected();
  }

  // --- prompts -------------------------------------------------------------------------------

  function snapshot() {
    return { points: state.points.map((p) => ({ ...p })), box: state.box && [...state.box],
             text: state.text, kept: state.kept.slice() };
  }

  function pushHistory() {
    state.history.push(snapshot());
    if (state.history.length > 200) state.history.shift();
  }

  function hasPrompt() {
    return state.points.length > 0 || state.box !== null || state.text !== null;
  }

  /* The field shows the phrase in the prompt again (after undo, clear, keep). */
  function showText() { els.textInput.value = state.text || ""; }

  async function predict(t0) {
    const seq = ++state.seq;
    updateButtons();
    if (!hasPrompt()) {
      state.result = null;
      state.bitmaps = [];
      clearCanvas(els.mask);
      renderCandidates();
      if (state.ready) setStatus(readyMessage(), "ready");
      state.done = seq;
      return;
    }
    if (!state.ready) return;  // sent when the embedding is ready
    const id = state.image.id;
    // A box alone may be segmented again in a window around it: one mask, sharper edges.
    const zoom = els.zoom.checked && state.box !== null && state.points.length === 0 &&
                 state.text === null;
    const body = { points: state.points.map((p) => [p.x, p.y]),
                   labels: state.points.map((p) => p.label), box: state.box,
                   // Text prompts are trained for the single mask; clicks get SAM's three.
                   text: state.text, multimask: !state.text && !zoom, zoom, format: "png" };
    let answer;
    const sent = performance.now();
    try {
      answer = await api(`/api/images/${id}/predict`, { method: "POST", json: body });
    } catch (e) {
      if (seq === state.seq) {
        setStatus(e.message, "error");
        state.done = seq;
      }
      return;
    }
    const fetched = performance.now();
    if (seq !== state.seq || !state.image || state.image.id !== id) return;
    state.result = answer;
    state.resultZoom = zoom;
    state.bitmaps = [];
    state.selected = answer.best;
    if (!(await drawSelected(seq))) return;
    if (t0 !== undefined) {
      await nextFrame();
      metrics.clickToMask.push(performance.now() - t0);
      metrics.fetchMs.push(fetched - sent);
      metrics.decoderMs.push(answer.decoder_ms);
    }
    if (seq !== state.seq) return;
    describeSelected();
    renderCandidates(seq);
    updateButtons();
    state.done = seq;
  }

  function canPrompt() {
    if (!state.image) return false;
    if (state.server && !state.server.model) {
      setStatus("No model is loaded: restart the server with --checkpoint to get masks.", "unavailable");
      return false;
    }
    return true;
  }

  function toImage(ev) {
    const r = els.image.getBoundingClientRect();
    const x = (ev.clientX - r.left) * state.image.width / r.width;
    const y = (ev.clientY - r.top) * state.image.height / r.height;
    return [clamp(Math.round(x * 10) / 10, 0, state.image.width),
            clamp(Math.round(y * 10) / 10, 0, state.image.height)];
  }

  let drag = null;

  els.image.addEventListener("pointerdown", (ev) => {
    if (!state.image || (ev.button !== 0 && ev.button !== 2)) return;
    ev.preventDefault();
    els.image.setPointerCapture(ev.pointerId);
    drag = { start: toImage(ev), sx: ev.clientX, sy: ev.clientY, button: ev.button,
             alt: ev.altKey, moved: false, end: null };
  });

  els.image.addEventListener("pointermove", (ev) => {
    if (!drag || drag.button !== 0) return;
    if (Math.hypot(ev.clientX - drag.sx, ev.clientY - drag.sy) > DRAG_PX) drag.moved = true;
    if (!drag.moved) return;
    drag.end = toImage(ev);
    const [x0, y0] = drag.start, [x1, y1] = drag.end;
    drawPrompts([Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)]);
  });

  els.image.addEventListener("pointerup", (ev) => {
    if (!drag) return;
    const t0 = performance.now();
    const d = drag;
    drag = null;
    if (!canPrompt()) { drawPrompts(); return; }
    if (d.moved && d.end) {
      const [x0, y0] = d.start, [x1, y1] = d.end;
      pushHistory();
      state.box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)];
    } else {
      const [x, y] = toImage(ev);
      pushHistory();
      state.points.push({ x, y, label: d.button === 2 || d.alt || ev.altKey ? 0 : 1 });
    }
    drawPrompts();
    predict(t0);
  });

  /* Find (or Enter): the phrase joins the points and box as one more prompt, undone like
   * a click; an empty field takes the phrase out. The field gives the keys back to the
   * shortcuts (1 2 3, K, ...) once the phrase is sent. */
  function submitText(ev) {
    ev.preventDefault();
    if (!canPrompt()) return;
    const phrase = els.textInput.value.trim() || null;
    els.textInput.blur();
    if (phrase !== state.text) {
      pushHistory();
      state.text = phrase;
    }
    showText();
    predict();  // also when unchanged: asks again after a failed answer
  }

  els.image.addEventListener("pointercancel", () => { drag = null; drawPrompts(); });
  els.image.addEventListener("contextmenu", (ev) => ev.preventDefault());

  function undo() {
    const previous = state.history.pop();
    if (!previous) return;
    const keptChanged = previous.kept.length !== state.kept.length;
    state.points = previous.points;
    state.box = previous.box;
    state.text = previous.text;
    state.kept = previous.kept;
    showText();
    if (keptChanged) drawKept();
    drawPrompts();
    predict(performance.now());
  }

  function clearAll() {
    if (!hasPrompt() && !state.kept.length && !state.showAuto) return;
    pushHistory();
    state.points = [];
    state.box = null;
    state.text = null;
    state.kept = [];
    state.showAuto = false;
    showText();
    drawKept();
    drawAuto();
    drawPrompts();
    predict();
  }

  async function keep() {
    if (!state.result) return;
    const bitmap = await bitmapOf(state.selected);
    pushHistory();
    state.kept.push({ points: state.points.map((p) => ({ ...p })), box: state.box,
                      text: state.text, candidate: state.selected, zoom: state.resultZoom,
                      bitmap,
                      rgb: KEPT_RGB[state.kept.length % KEPT_RGB.length] });
    state.points = [];
    state.box = null;
    state.text = null;
    showText();
    drawKept();
    drawPrompts();
    await predict();
    setStatus(`${plural(state.kept.length, "object")} kept: click the next one.`, "ready");
  }

  async function everything() {
    if (!state.ready) return;
    if (state.auto) {
      state.showAuto = !state.showAuto;
      drawAuto();
      updateButtons();
      return;
    }
    const id = state.image.id;
    els.everything.disabled = true;
    setStatus("Segmenting everything… (a grid of prompts over the image)");
    try {
      const answer = await api(`/api/images/${id}/everything`, { method: "POST" });
      if (!state.image || state.image.id !== id) return;
      state.auto = { bitmap: await createImageBitmap(pngBlob(answer.overlay_png)), count: answer.count };
      state.showAuto = true;
      drawAuto();
      setStatus(`Everything: ${plural(answer.count, "mask")} found (A hides them).`, "ready");
    } catch (e) {
      setStatus(e.message, "error");
    } finally {
      updateButtons();
    }
  }

  function downloadPng() {
    if (!state.result) return;
    saveBlob(pngBlob(state.result.masks[state.selected].png), `${stem()}_mask.png`);
  }

  async function downloadCoco() {
    if (!state.ready) return;
    const asObject = (points, box, text, candidate, zoom) => ({
      points: points.map((p) => [p.x, p.y]), labels: points.map((p) => p.label), box, text,
      candidate, zoom });
    const objects = state.kept.map((k) => asObject(k.points, k.box, k.text, k.candidate,
                                                   k.zoom));
    if (state.result && hasPrompt()) {
      objects.push(asObject(state.points, state.box, state.text, state.selected,
                            state.resultZoom));
    }
    try {
      const doc = await api(`/api/images/${state.image.id}/coco`, {
        method: "POST", json: { objects, everything: state.auto !== null } });
      saveBlob(new Blob([JSON.stringify(doc, null, 2)], { type: "application/json" }),
               `${stem()}_coco.json`);
      setStatus(`COCO JSON: ${plural(doc.annotations.length, "mask")} saved.`, "ready");
    } catch (e) {
      setStatus(e.message, "error");
    }
  }

  function updateButtons() {
    const ready = state.ready;
    els.undo.disabled = state.history.length === 0;
    els.clear.disabled = !(hasPrompt() || state.kept.length || state.showAuto);
    els.keep.disabled = !state.result;
    els.everything.disabled = !ready;
    els.downloadPng.disabled = !state.result;
    els.downloadCoco.disabled = !ready || !(state.result || state.kept.length || state.auto);
    els.textSubmit.disabled = !state.image;
    const n = state.points.length;
    els.promptCount.textContent = [n ? plural(n, "point") : "", state.box ? "box" : "",
                                   state.text !== null ? "phrase" : ""]
      .filter(Boolean).join(" + ");
    els.promptCount.title = state.text !== null ? `phrase: ${state.text}` : "";
    els.keptCount.textContent = state.kept.length
      ? `${plural(state.kept.length, "object")} kept` : "";
  }

  // --- images --------------------------------------------------------------------------------

  function layout() {
    if (!state.image) return;
    const { width: w, height: h } = state.image;
    const availW = Math.max(50, els.stage.clientWidth - 48);
    const availH = Math.max(50, els.stage.clientHeight - 48);
    state.scale = Math.min(availW / w, availH / h, 3);
    els.wrap.style.width = `${Math.floor(w * state.scale)}px`;
    els.wrap.style.height = `${Math.floor(h * state.scale)}px`;
    drawPrompts();
  }

  function stopPolling() {
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
  }

  function resetImageState() {
    stopPolling();
    state.seq++;
    state.done = state.seq;
    Object.assign(state, { ready: false, points: [], box: null, text: null, history: [],
                           result: null, bitmaps: [], selected: 0, kept: [], auto: null,
                           showAuto: false });
    showText();
  }

  function handleState(info) {
    if (!state.image || state.image.id !== info.id) return;
    if (info.state === "ready") {
      state.ready = true;
      setProgress(null);
      setStatus(readyMessage(), "ready");
      updateButtons();
      if (hasPrompt()) predict(performance.now());
    } else if (info.state === "queued" || info.state === "encoding") {
      setProgress(info.progress);
      setStatus(`Computing the image embedding… ${Math.round(info.progress * 100)}%`, "encoding");
      state.pollTimer = setTimeout(() => poll(info.id), POLL_MS);
    } else if (info.state === "failed") {
      setProgress(null);
      setStatus(`The embedding failed: ${info.error}`, "failed");
    } else {
      setProgress(null);
      setStatus("No model is loaded: the image is shown, but masks need --checkpoint.", "unavailable");
    }
  }

  async function poll(id) {
    try {
      handleState(await api(`/api/images/${id}`));
    } catch (e) {
      if (state.image && state.image.id === id) setStatus(e.message, "error");
    }
  }

  async function showImage(info) {
    resetImageState();
    state.image = info;
    history.replaceState(null, "", `#image=${info.id}`);
    const response = await api(`/api/images/${info.id}/image`, { raw: true });
    const bitmap = await createImageBitmap(await response.blob());
    if (!state.image || state.image.id !== info.id) return;
    state.imageBitmap = bitmap;
    for (const canvas of [els.image, els.auto, els.kept, els.mask]) {
      canvas.width = info.width;
      canvas.height = info.height;
    }
    els.image.getContext("2d").drawImage(bitmap, 0, 0);
    els.prompts.setAttribute("viewBox", `0 0 ${info.width} ${info.height}`);
    els.dropzone.hidden = true;
    els.wrap.hidden = false;
    els.imageName.textContent = `${info.name} · ${info.width} × ${info.height}`;
    els.imageName.title = info.name;
    layout();
    drawKept();
    drawAuto();
    renderCandidates();
    updateButtons();
    handleState(info);
  }

  async function openFile(file) {
    if (!file) return;
    const limit = state.server ? state.server.max_upload_bytes : Infinity;
    if (file.size > limit) {
      setStatus(`${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MB, over the server's ` +
                `limit of ${(limit / 2 ** 20).toFixed(0)} MB.`, "error");
      return;
    }
    resetImageState();
    setStatus(`Uploading ${file.name}…`);
    setProgress(0);
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      await showImage(await api("/api/images", { method: "POST", form }));
    } catch (e) {
      setProgress(null);
      setStatus(e.message, "error");
    } finally {
      els.upload.value = "";
    }
  }

  async function openExisting(id) {
    try {
      await showImage(await api(`/api/images/${id}`));
    } catch (e) {
      if (e.status === 404) {
        history.replaceState(null, "", location.pathname);
        setStatus("Open an image to start.", "idle");
      } else {
        setStatus(e.message, "error");
      }
    }
  }

  // --- wiring --------------------------------------------------------------------------------

  els.upload.addEventListener("change", () => openFile(els.upload.files[0]));
  els.choose.addEventListener("click", () => els.upload.click());
  els.undo.addEventListener("click", undo);
  els.clear.addEventListener("click", clearAll);
  els.keep.addEventListener("click", keep);
  els.everything.addEventListener("click", everything);
  els.downloadPng.addEventListener("click", downloadPng);
  els.downloadCoco.addEventListener("click", downloadCoco);
  els.textForm.addEventListener("submit", submitText);
  els.zoom.addEventListener("change", () => {  // the key shortcuts stay with the image
    els.zoom.blur();
    if (hasPrompt()) predict();
  });
  els.textInput.addEventListener("keydown", (ev) => {  // Esc: back to the sent phrase, keys
    if (ev.key === "Escape") { showText(); els.textInput.blur(); }
  });
  window.addEventListener("resize", layout);

  let dragDepth = 0;
  const hasFiles = (ev) => ev.dataTransfer && Array.from(ev.dataTransfer.types).includes("Files");
  window.addEventListener("dragenter", (ev) => {
    if (!hasFiles(ev)) return;
    dragDepth++;
    els.dropHint.hidden = false;
  });
  window.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) els.dropHint.hidden = true;
  });
  window.addEventListener("dragover", (ev) => ev.preventDefault());
  window.addEventListener("drop", (ev) => {
    ev.preventDefault();
    dragDepth = 0;
    els.dropHint.hidden = true;
    if (ev.dataTransfer && ev.dataTransfer.files.length) openFile(ev.dataTransfer.files[0]);
  });
  window.addEventListener("paste", (ev) => {
    const item = Array.from(ev.clipboardData ? ev.clipboardData.items : [])
      .find((it) => it.kind === "file" && it.type.startsWith("image/"));
    if (item) openFile(item.getAsFile());
  });

  document.addEventListener("keydown", (ev) => {
    const tag = ev.target && ev.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA" || ev.altKey) return;
    const key = ev.key.toLowerCase();
    if ((ev.ctrlKey || ev.metaKey) && key !== "z") return;
    const actions = {
      z: undo, c: clearAll, k: keep, enter: keep, a: everything, d: downloadPng,
      j: downloadCoco, o: () => els.upload.click(),
      1: () => select(0), 2: () => select(1), 3: () => select(2),
      escape: () => { drag = null; drawPrompts(); },
    };
    const action = actions[key];
    if (!action) return;
    if (key === "enter" && tag === "BUTTON") return;  // Enter on a button presses it
    ev.preventDefault();
    action();
  });

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get("token");
    if (token) sessionStorage.setItem("attnvision-token", token);
    state.token = token || sessionStorage.getItem("attnvision-token");
    const image = params.get("image");
    history.replaceState(null, "", image ? `#image=${image}` : location.pathname);
    return image && /^[0-9a-f]{32}$/.test(image) ? image : null;
  }

  async function init() {
    const image = readHash();
    updateButtons();
    try {
      state.server = await api("/api/status");
    } catch (e) {
      if (e.status === 401) {
        setStatus("This server needs its token: open the address printed by attnvision " +
                  "serve (it ends in #token=…).", "error");
      } else {
        setStatus(e.message, "error");
      }
      els.badge.textContent = "model: ?";
      return;
    }
    const s = state.server;
    els.badge.textContent = s.model ? `SAM ${s.model}` : "no model loaded";
    els.badge.classList.toggle("off", !s.model);
    els.noModel.hidden = Boolean(s.model);
    els.textForm.hidden = !s.text;
    els.noModelDetail.textContent = s.message.replace(/^.*?\(/, "").replace(/\)$/, "");
    els.limits.textContent = `Up to ${(s.max_upload_bytes / 2 ** 20).toFixed(0)} MB and ` +
      `${(s.max_pixels / 1e6).toFixed(0)} megapixels.`;
    if (!s.model) setStatus("No model is loaded: open an image to view it; masks need --checkpoint.", "unavailable");
    if (image) await openExisting(image);
  }

  init();
})();
