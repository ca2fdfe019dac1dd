// The page's behaviour: list models, send the image, show the maps and the classes.
// Text from the server (labels, errors) is set with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function element(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

const option = (value, text) => element("option", { value, textContent: text });
const percent = (p) => (p === null || p === undefined ? "no probability" : p >= 0.001 || p === 0 ? `${(p * 100).toFixed(1)}%` : `${(p * 100).toExponential(1)}%`);
const number = (v) => (Math.abs(v) >= 0.01 || v === 0 ? v.toPrecision(3) : v.toExponential(2));

function modelChosen() {
  const model = models.find((m) => m.name === $("model").value);
  $("method").replaceChildren();
  $("sanity").textContent = "";
  clearModelExtras();
  $("target").replaceChildren(option("", "the top classes"));
  if (!model) return;
  if (!model.available) {
    $("model-info").textContent = `unavailable: ${model.error}`;
    return;
  }
  $("model-info").textContent = `input ${model.input}, output ${model.output}` +
    (model.takes_images ? "" : " (no image preprocessing configured: this model takes tensors only)");
  $("method").append(...model.methods.map((m) => Object.assign(
    option(m, m + sanityNote(model.sanity, m)), { title: model.method_summaries[m] || "" })));
  $("sanity").textContent = sanityLine(model.sanity);
  $("method").value = model.default_method;
  renderMethodParams();
  const count = model.classes || model.labels.length;
  for (let i = 0; i < count; i++) {
    const label = model.labels[i];
    $("target").append(option(String(i), label !== undefined && label !== String(i) ? `class ${i}: ${label}` : `class ${i}`));
  }
  $("top").max = String(Math.min(count || Infinity, $("top").dataset.max));
  $("top").value = String(Math.min(Number($("top").value), Number($("top").max)));
  showModelExtras(model);
}

// With a token file on the server, the API wants the token on every call. It is kept in
// this page's memory only: a reload asks again.
let token = "";
const authorization = () => (token ? { Authorization: `Bearer ${token}` } : {});

// The stored sanity check (cascading randomisation of the weights): a method whose maps stay
// similar while the weights are destroyed does not explain this model.
function sanityNote(sanity, method) {
  const result = sanity && sanity.methods[method];
  if (!result) return "";
  return result.passed ? " (sanity: pass)" : " (sanity: FAIL)";
}

function sanityLine(sanity) {
  if (!sanity) return "";
  const parts = Object.entries(sanity.methods).map(([method, r]) =>
    `${method} ${r.passed ? "passed" : "failed"} (${r[sanity.metric].toFixed(2)})`);
  return `Sanity check, ${sanity.score} ${sanity.metric} similarity to the trained model's maps ` +
    `as the weights are randomised (pass at most ${sanity.max_similarity}): ${parts.join(", ")}.`;
}

// --- Method parameters -------------------------------------------------------------------
// One control per parameter of the chosen method, generated from /api/models'
// `method_params` (the server's method registry): a choice list, a checkbox, a number or
// a text field. Left empty, a parameter takes its default; tensors cannot be sent from
// here. Each control is sent as `param.NAME`.

function methodParamsBox() {
  let box = $("method-params");
  if (!box) {
    box = element("fieldset", { id: "method-params" });
    $("method").closest("label").after(box);
  }
  return box;
}

function methodParamControl(p) {
  const id = `param-${p.name}`;
  const shown = p.default === null || p.default === undefined ? "" : String(p.default);
  let input;
  if (p.choices) {
    input = element("select", { id }, option("", `default (${shown || "chosen by the model"})`),
      ...p.choices.map((c) => option(c, c)));
  } else if (p.type === "bool") {
    input = element("select", { id }, option("", `default (${shown || "unset"})`),
      option("true", "true"), option("false", "false"));
  } else {
    input = element("input", {
      id, type: p.type === "int" || p.type === "float" ? "number" : "text",
      step: p.type === "float" ? "any" : "1", placeholder: shown || "default",
    });
  }
  input.dataset.param = p.name;
  const kind = p.kind === "graph" ? "changes the explain model" : "fed at run time";
  return element("label", { title: `${p.description} (${p.type}, ${kind})` }, `${p.name} `, input);
}

function renderMethodParams() {
  const box = methodParamsBox();
  const model = models.find((m) => m.name === $("model").value);
  const params = ((model && model.method_params) || {})[$("method").value] || [];
  const sendable = params.filter((p) => p.type !== "tensor");
  box.replaceChildren(...(sendable.length ? [element("legend", { textContent: "Method parameters" })] : []),
    ...sendable.map(methodParamControl));
  box.hidden = sendable.length === 0;
}

function methodParamEntries() {
  const box = $("method-params");
  if (!box) return [];
  return Array.from(box.querySelectorAll("[data-param]"))
    .filter((input) => input.value !== "")
    .map((input) => [`param.${input.dataset.param}`, input.value]);
}
// --- end of method parameters -------------------------------------------------------------

async function loadModels() {
  const response = await fetch("/api/models", { headers: authorization() });
  const listing = await response.json();
  if (response.status === 401) {
    $("token-form").hidden = false;
    showError(token ? `401: ${listing.error}` : "");
    return;
  }
  if (!response.ok) throw new Error(`${response.status}: ${listing.error}`);
  $("token-form").hidden = true;
  showError("");
  models = listing.models;
  $("sign").replaceChildren(...listing.signs.map((s) => option(s, s)));
  $("top").dataset.max = String(listing.max_top);
  $("model").replaceChildren(...models.map((m) => option(m.name, m.available ? m.name : `${m.name} (unavailable)`)));
  const first = models.find((m) => m.available);
  if (first) $("model").value = first.name;
  modelChosen();
}

function mapFigure(row, method, barPng) {
  const bar = element("div", { className: "bar" },
    element("img", { src: barPng, alt: "colour scale" }),
    element("div", {}, element("span", { textContent: number(row.range[0]) }),
      element("span", { textContent: number(row.range[1]) })));
  return element("figure", { className: "map" },
    element("img", { className: "overlay", src: row.overlay_png, alt: `${method} saliency of ${row.label}` }),
    element("figcaption", { textContent: `${method} for ${row.label} (${percent(row.probability)})` }),
    bar);
}

function classRow(c, explained) {
  const bar = element("span", { className: "prob" });
  bar.style.width = `${Math.round(c.probability * 80)}px`;
  const tr = element("tr", { className: explained.has(c.index) ? "explained" : "" },
    element("td", { textContent: String(c.index) }),
    element("td", { textContent: c.label }),
    element("td", { className: "number", textContent: c.score.toFixed(3) }),
    element("td", { className: "number" }, bar, percent(c.probability)));
  return tr;
}

function showResult(result, file) {
  const input = element("figure", {},
    element("img", { id: "original", src: URL.createObjectURL(file), alt: "the uploaded image" }),
    element("figcaption", { textContent: "input" }));
  $("images").replaceChildren(input, ...result.explained.map((r) => mapFigure(r, result.method, result.colour_bar_png)));
  const explained = new Set(result.explained.map((r) => r.index));
  $("classes").tBodies[0].replaceChildren(...result.top.map((c) => classRow(c, explained)));
  $("result").hidden = false;
  decorateResult(result);
  showDetections(result);
}

async function explain(event) {
  event.preventDefault();
  showError("");
  const file = $("image").files[0];
  if (!file) { showError("choose an image first"); return; }
  const fields = ["model", "method", "target", "top", "sign", "colormap", "opacity", "percentile"];
  const query = new URLSearchParams(fields.map((f) => [f, $(f).value]));
  addTargetQuery(query);
  for (const [name, value] of methodParamEntries()) query.append(name, value);
  $("busy").hidden = false;
  $("explain").disabled = true;
  try {
    const response = await fetch(`/api/explain?${query}`, {
      method: "POST", headers: { "Content-Type": "application/octet-stream", ...authorization() }, body: file,
    });
    const payload = await response.json();
    if (!response.ok) {
      $("result").hidden = true;
      showError(`${response.status}: ${payload.error}`);
      return;
    }
    showResult(payload, file);
  } catch (err) {
    showError(`the server did not answer: ${err}`);
  } finally {
    $("busy").hidden = true;
    $("explain").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("model").addEventListener("change", modelChosen);
  $("method").addEventListener("change", renderMethodParams);
  $("opacity").addEventListener("input", () => { $("opacity-value").textContent = $("opacity").value; });
  $("explain-form").addEventListener("submit", explain);
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    loadModels().catch((err) => showError(`could not list the models: ${err}`));
  });
  loadModels().catch((err) => showError(`could not list the models: ${err}`));
});

// --- What surrounds the picked model, method and maps: the method's sanity verdict, the
// chosen image's preview, the model's samples as one-click inputs, each map's download
// link and the colour legend. Hooked in by clearModelExtras/showModelExtras (modelChosen)
// and decorateResult (showResult); everything else listens for itself.

function clearModelExtras() {
  $("method-sanity").textContent = "";
  showSamples(null);
  showTargetKinds(null);
}

function showModelExtras(model) {
  showMethodSanity();
  showSamples(model);
  showTargetKinds(model);
}

const chosenModel = () => models.find((m) => m.name === $("model").value);

// The stored verdict of the picked method, in words; a failed one says what that means.
function showMethodSanity() {
  const line = $("method-sanity");
  const model = chosenModel();
  const method = $("method").value;
  const sanity = model && model.available ? model.sanity : null;
  const result = sanity && sanity.methods[method];
  line.classList.toggle("failed", Boolean(result && !result.passed));
  if (!sanity || !method) {
    line.textContent = "";
  } else if (!result) {
    line.textContent = `${method} is not in this model's stored sanity check.`;
  } else {
    const score = `${sanity.metric} ${result[sanity.metric].toFixed(2)}`;
    line.textContent = result.passed
      ? `${method} passed this model's sanity check (${score}, at most ${sanity.max_similarity}).`
      : `${method} failed this model's sanity check (${score}, over ${sanity.max_similarity}): ` +
        "its maps hardly change when the model's weights are randomised, so they show the image " +
        "more than what this model learned.";
  }
}

// The preview: the file as the browser decodes it, before anything is sent.
let previewUrl = "";
function showPreview(file) {
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = file ? URL.createObjectURL(file) : "";
  $("preview-figure").hidden = !file;
  if (!file) return;
  $("preview").alt = `preview of ${file.name}, the image to explain`;
  $("preview").src = previewUrl;
  $("preview-caption").textContent = `to explain: ${file.name}`;
}

function previewFailed() {
  $("preview-caption").textContent =
    `${$("image").files[0]?.name || "this file"}: the browser cannot show it; Explain says whether the server can read it`;
}

// The samples are fetched with the token like every /api/ call, so they are shown from
// blob: URLs (an <img src> could not send the Authorization header).
let samplesShown = 0;
let sampleUrls = [];

async function showSamples(model) {
  const generation = ++samplesShown;
  sampleUrls.forEach((url) => URL.revokeObjectURL(url));
  sampleUrls = [];
  $("sample-list").replaceChildren();
  $("samples").hidden = true;
  if (!model || !model.available) return;
  try {
    const response = await fetch(`/api/models/${encodeURIComponent(model.name)}/samples`, { headers: authorization() });
    if (!response.ok) return; // the listing says nothing the model picker has not said
    const listing = await response.json();
    const fetched = await Promise.all(listing.samples.map(async (sample) => {
      const image = await fetch(sample.url, { headers: authorization() });
      return image.ok ? { name: sample.name, blob: await image.blob() } : null;
    }));
    if (generation !== samplesShown) return; // another model was picked meanwhile
    const buttons = fetched.filter(Boolean).map(sampleButton);
    $("sample-list").replaceChildren(...buttons);
    $("samples").hidden = buttons.length === 0;
  } catch (err) {
    if (generation === samplesShown) showError(`could not load the samples: ${err}`);
  }
}

function sampleButton({ name, blob }) {
  const url = URL.createObjectURL(blob);
  sampleUrls.push(url);
  const button = element("button", { type: "button", className: "sample", title: `Explain ${name}` },
    element("img", { src: url, alt: "" }), element("span", { textContent: name }));
  button.setAttribute("aria-label", `Explain sample ${name}`);
  button.addEventListener("click", () => explainSample(new File([blob], name, { type: blob.type })));
  return button;
}

// A sample becomes the form's file, as if chosen in the file picker, and is explained.
function explainSample(file) {
  const transfer = new DataTransfer();
  transfer.items.add(file);
  $("image").files = transfer.files;
  showPreview(file);
  $("explain-form").requestSubmit();
}

// What the maps were drawn with, read when Explain is pressed (the controls may change
// while the answer is on its way).
let drawn = { model: "", sign: "all", colormap: "" };
function rememberDrawing() {
  drawn = { model: $("model").value, sign: $("sign").value, colormap: $("colormap").value };
}

// The sign's default colours, as render/options.py's DEFAULT_COLORMAPS draws them.
const DEFAULT_COLOURS = {
  all: "Red: raises the class's score; blue: lowers it; white: no effect. The deeper the colour, the stronger.",
  positive: "Only what raises the class's score is drawn: the deeper the red, the more it raises it.",
  negative: "Only what lowers the class's score is drawn: the deeper the blue, the more it lowers it.",
  absolute: "How strongly each pixel moves the class's score, either way (the sign is dropped): from dark purple (none) to yellow (the most).",
};
const OTHER_COLOURS = {
  all: "The bar's right end: raises the class's score; its left end: lowers it; its middle: no effect.",
  positive: "Only what raises the class's score is drawn: from the bar's left end (none) to its right end (the most).",
  negative: "Only what lowers the class's score is drawn: from the bar's left end (none) to its right end (lowers it the most).",
  absolute: "How strongly each pixel moves the class's score, either way (the sign is dropped): from the bar's left end (none) to its right end (the most).",
};

function legendText(sign, colormap) {
  const text = (colormap ? OTHER_COLOURS : DEFAULT_COLOURS)[sign] || "";
  return `Sign "${sign}": ${text} The numbers under each bar are the saliency at its two ends.`;
}

const safeName = (text) => text.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "");

function mapFileName(row, method) {
  const label = row.label !== String(row.index) ? `-${row.label}` : "";
  return `${safeName(`${drawn.model}_${method}_class${row.index}${label}_${drawn.sign}`)}.png`;
}

function decorateResult(result) {
  $("legend-bar").src = result.colour_bar_png;
  $("legend-text").textContent = legendText(drawn.sign, drawn.colormap);
  const figures = $("images").querySelectorAll("figure.map");
  result.explained.forEach((row, i) => {
    if (!figures[i]) return;
    const link = element("a", { className: "download", href: row.overlay_png,
      download: mapFileName(row, result.method), textContent: "Download PNG" });
    link.setAttribute("aria-label", `Download PNG: the ${result.method} map of ${row.label}`);
    figures[i].append(link);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("method").addEventListener("change", showMethodSanity);
  $("image").addEventListener("change", () => showPreview($("image").files[0]));
  $("preview").addEventListener("error", () => { if (previewUrl) previewFailed(); });
  $("explain-form").addEventListener("submit", rememberDrawing);
});

// --- Targets beyond a class: a box drawn on the preview (a region of a dense output, or the
// detector's prediction best overlapping it), a sequence position, and the detector's own
// top detections to pick from. The box is kept in the model input's pixels, as the server
// takes it (the preview shows the image at another size).

let box = null; // [x0, y0, x1, y1] in model-input pixels
let dragFrom = null;

function showTargetKinds(model) {
  const kinds = (model && model.available && model.target_kinds) || [];
  const drawable = (kinds.includes("region") || kinds.includes("detection")) && model.input_size;
  $("box-target").hidden = !drawable;
  $("box-hint").textContent = kinds.includes("detection")
    ? "Drag on the preview to draw a box: Explain explains the detection that best overlaps it (the class picked above, if any)."
    : "Drag on the preview to draw a box: Explain explains the class picked above (or all classes) summed over it.";
  $("position-label").hidden = !kinds.includes("position");
  $("paint-label").hidden = !kinds.includes("region"); // a detector matches boxes only
  $("paint").checked = false;
  resetPaint();
  $("position").value = "";
  $("detections").hidden = true;
  setBox(null);
}

function modelPixels(event) {
  const img = $("preview");
  const rect = img.getBoundingClientRect();
  const [height, width] = chosenModel().input_size;
  const x = Math.min(Math.max(event.clientX - rect.left, 0), rect.width);
  const y = Math.min(Math.max(event.clientY - rect.top, 0), rect.height);
  return [(x / rect.width) * width, (y / rect.height) * height];
}

function setBox(value) {
  box = value;
  const shown = $("drawn-box");
  $("box-value").textContent = box ? `box ${box.map((v) => v.toFixed(1)).join(", ")} (input pixels)` : "no box";
  if (!box) { shown.hidden = true; return; }
  const img = $("preview");
  const [height, width] = chosenModel().input_size;
  const sx = img.clientWidth / width;
  const sy = img.clientHeight / height;
  Object.assign(shown.style, {
    left: `${box[0] * sx + img.offsetLeft}px`, top: `${box[1] * sy + img.offsetTop}px`,
    width: `${(box[2] - box[0]) * sx}px`, height: `${(box[3] - box[1]) * sy}px`,
  });
  shown.hidden = false;
}

// Painting: white strokes on a canvas of the model input's size, sent as a PNG mask.
let painted = false;
const painting = () => $("paint").checked && !$("paint-label").hidden;

function resetPaint() {
  const canvas = $("painted");
  const model = chosenModel();
  painted = false;
  canvas.hidden = true;
  if (!model || !model.input_size) return;
  [canvas.height, canvas.width] = model.input_size;
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
}

function paintAt(event) {
  const [x, y] = modelPixels(event);
  const canvas = $("painted");
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.beginPath();
  context.arc(x, y, Math.max(1, canvas.width / 16), 0, 2 * Math.PI);
  context.fill();
  painted = true;
  canvas.hidden = false;
  $("box-value").textContent = "painted region";
}

function startDrag(event) {
  if ($("box-target").hidden) return;
  event.preventDefault();
  dragFrom = modelPixels(event);
  if (painting()) paintAt(event);
}

function moveDrag(event) {
  if (!dragFrom) return;
  if (painting()) { paintAt(event); return; }
  const [x, y] = modelPixels(event);
  setBox([Math.min(dragFrom[0], x), Math.min(dragFrom[1], y), Math.max(dragFrom[0], x), Math.max(dragFrom[1], y)]);
}

function endDrag(event) {
  if (!dragFrom) return;
  moveDrag(event);
  dragFrom = null;
  if (painting()) return;
  if (box && (box[2] - box[0] < 0.5 || box[3] - box[1] < 0.5)) setBox(null); // a click, no box
}

function addTargetQuery(query) {
  const model = chosenModel();
  const kinds = (model && model.target_kinds) || [];
  if (painting() && painted) {
    query.set("region_mask", $("painted").toDataURL("image/png"));
    query.set("region_classes", $("target").value);
    query.set("target", "");
  } else if (box && !$("box-target").hidden) {
    const text = box.map((v) => v.toFixed(2)).join(",");
    if (kinds.includes("detection")) {
      query.set("detection_box", text);
      query.set("detection_class", $("target").value);
    } else {
      query.set("region_box", text);
      query.set("region_classes", $("target").value);
    }
    query.set("target", "");
  } else if (!$("position-label").hidden && $("position").value !== "") {
    query.set("position", $("position").value);
    query.set("position_class", $("target").value);
    query.set("target", "");
  }
}

function showDetections(result) {
  const found = result.detections || [];
  $("detections").hidden = found.length === 0;
  $("detection-list").replaceChildren(...found.map((d) => {
    const model = chosenModel();
    const label = (model.labels && model.labels[d.class]) || `class ${d.class}`;
    const button = element("button", { type: "button", className: "detection",
      textContent: `${label} ${percent(d.score)} at ${d.box.map((v) => v.toFixed(0)).join(",")}` });
    button.addEventListener("click", () => {
      setBox(d.box);
      $("explain-form").requestSubmit();
    });
    return button;
  }));
}

document.addEventListener("DOMContentLoaded", () => {
  $("preview").addEventListener("mousedown", startDrag);
  document.addEventListener("mousemove", moveDrag);
  document.addEventListener("mouseup", endDrag);
  $("clear-box").addEventListener("click", () => { setBox(null); resetPaint(); });
  $("paint").addEventListener("change", () => { setBox(null); resetPaint(); });
});
