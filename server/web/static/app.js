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
const percent = (p) => (p >= 0.001 || p === 0 ? `${(p * 100).toFixed(1)}%` : `${(p * 100).toExponential(1)}%`);
const number = (v) => (Math.abs(v) >= 0.01 || v === 0 ? v.toPrecision(3) : v.toExponential(2));

function modelChosen() {
  const model = models.find((m) => m.name === $("model").value);
  $("method").replaceChildren();
  $("sanity").textContent = "";
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
}

async function explain(event) {
  event.preventDefault();
  showError("");
  const file = $("image").files[0];
  if (!file) { showError("choose an image first"); return; }
  const fields = ["model", "method", "target", "top", "sign", "colormap", "opacity", "percentile"];
  const query = new URLSearchParams(fields.map((f) => [f, $(f).value]));
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
