// A collection's page: uploads each chosen or dropped file with its own progress, and
// refreshes the documents table in place while any document is being processed.
(function () {
  "use strict";
  const box = document.getElementById("documents");
  const form = document.getElementById("upload-form");
  let pending = 0;
  const followed = []; // upload lines that follow their documents to ready or failed

  async function refresh() {
    const response = await fetch(box.dataset.url, { headers: { Accept: "text/html" } });
    if (response.ok) { box.innerHTML = await response.text(); follow(); }
  }

  function follow() {
    followed.forEach((line) => {
      const stages = line.ids.map((id) => {
        const status = box.querySelector('tr[data-document="' + id + '"] .status');
        return status ? status.textContent.trim() : "";
      });
      if (stages.includes("failed")) line.label.textContent = line.name + ": failed (the reason is in the table)";
      else if (stages.every((stage) => stage === "ready")) line.label.textContent = line.name + ": ready";
    });
  }

  function busy() {
    const table = box.querySelector("[data-active]");
    return pending > 0 || (table && table.dataset.active === "true");
  }

  function poll() {
    const next = () => setTimeout(poll, 1000);
    if (busy()) refresh().then(next, next); else next();
  }

  function upload(file) {
    const item = document.createElement("li");
    const label = document.createElement("span");
    const bar = document.createElement("progress");
    bar.max = 1; bar.value = 0;
    bar.setAttribute("aria-label", file.name + " upload");
    label.textContent = file.name + ": uploading ";
    item.append(label, bar);
    document.getElementById("upload-list").append(item);
    const body = new FormData();
    body.append("csrfmiddlewaretoken", form.querySelector("input[name=csrfmiddlewaretoken]").value);
    body.append("file", file, file.name);
    const request = new XMLHttpRequest();
    pending += 1;
    request.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; };
    request.onload = () => {
      pending -= 1;
      bar.remove();
      let results = [];
      try { results = JSON.parse(request.responseText).results || []; } catch (e) { results = []; }
      const failed = results.filter((r) => r.error);
      if (request.status !== 200) label.textContent = file.name + ": upload failed (" + request.status + ")";
      else if (failed.length) label.textContent = failed.map((r) => r.name + ": " + r.error).join("; ");
      else {
        label.textContent = file.name + ": received" + (results.some((r) => r.duplicate) ? " (unchanged, already here)" : ", processing");
        const ids = results.filter((r) => r.id && !r.duplicate).map((r) => r.id);
        if (ids.length) followed.push({ label: label, name: file.name, ids: ids });
      }
      refresh();
    };
    request.onerror = () => { pending -= 1; label.textContent = file.name + ": the upload was interrupted"; };
    request.open("POST", form.action);
    request.setRequestHeader("Accept", "application/json");
    request.send(body);
  }

  if (form) {
    const input = form.querySelector("input[type=file]");
    const zone = document.getElementById("dropzone");
    const send = (files) => { Array.from(files).forEach(upload); input.value = ""; };
    form.addEventListener("submit", (e) => { e.preventDefault(); send(input.files); });
    input.addEventListener("change", () => send(input.files));
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); send(e.dataTransfer.files); });
  }
  if (box) poll();
})();
