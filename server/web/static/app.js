// The page's behaviour: list models, send the image, show the map and the classes.
// Text from the server (labels, errors) is set with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function option(value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  return o;
}

function modelChosen() {
  const model = models.find((m) => m.name === $("model").value);
  const method = $("method");
  const target = $("target");
  method.replaceChildren();
  target.replaceChildren(option("", "the top class"));
  if (!model) return;
  if (!model.available) {
    $("model-info").textContent = `unavailable: ${model.error}`;
    return;
  }
  $("model-info").textContent = `input ${model.input}, output ${model.output}` +
    (model.takes_images ? "" : " (no image preprocessing configured: this model takes tensors only)");
  for (const m of model.methods) method.append(option(m, m));
  method.value = model.default_method;
  const count = model.classes || model.labels.length;
  for (let i = 0; i < count; i++) {
    const label = model.labels[i];
    target.append(option(String(i), label !== undefined && label !== String(i) ? `${i}: ${label}` : String(i)));
  }
}

async function loadModels() {
  const response = await fetch("/api/models");
  models = (await response.json()).models;
  const select = $("model");
  select.replaceChildren(...models.map((m) => option(m.name, m.available ? m.name : `${m.name} (unavailable)`)));
  const first = models.find((m) => m.available);
  if (first) select.value = first.name;
  modelChosen();
}

function showResult(result, file) {
  $("original").src = URL.createObjectURL(file);
  $("overlay").src = result.overlay_png;
  $("overlay-caption").textContent = `${result.method}, class ${result.target.label}`;
  const rows = result.top.map((c) => {
    const tr = document.createElement("tr");
    if (c.index === result.target.index) tr.className = "explained";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round(c.probability * 100)}px`;
    const cells = [String(c.index), c.label, c.score.toFixed(3), `${(c.probability * 100).toFixed(1)}%`];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      if (i >= 2) td.className = "number";
      if (i === 3) td.append(bar);
      td.append(text);
      tr.append(td);
    });
    return tr;
  });
  $("classes").tBodies[0].replaceChildren(...rows);
  $("result").hidden = false;
}

async function explain(event) {
  event.preventDefault();
  showError("");
  const file = $("image").files[0];
  if (!file) { showError("choose an image first"); return; }
  const query = new URLSearchParams({
    model: $("model").value, method: $("method").value, target: $("target").value, top: $("top").value,
  });
  $("busy").hidden = false;
  $("explain").disabled = true;
  try {
    const response = await fetch(`/api/explain?${query}`, {
      method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: file,
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
  $("explain-form").addEventListener("submit", explain);
  loadModels().catch((err) => showError(`could not list the models: ${err}`));
});
