// The API viewer at /api/docs: reads /api/v1/openapi.json and shows its
// operations grouped by tag (method, path, summary, parameters, request
// and response schemas as pretty JSON). Plain DOM, nothing from another
// host; every text goes in through textContent.
"use strict";

(function () {
  const METHODS = ["get", "post", "put", "patch", "delete", "head", "options", "trace"];
  const METHOD_CLASS = { get: "busy", post: "ok", put: "warn", patch: "warn", delete: "bad" };

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children || []) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  // `code` spans and [text](https://…) links of the document's Markdown;
  // everything else stays plain text.
  function inline(text) {
    const out = document.createDocumentFragment();
    const pattern = /`([^`]+)`|\[([^\]]+)\]\((https?:\/\/[^)\s]+)\)/g;
    let last = 0;
    let match;
    while ((match = pattern.exec(text || "")) !== null) {
      out.append(text.slice(last, match.index));
      if (match[1] !== undefined) out.append(el("code", { text: match[1] }));
      else out.append(el("a", { href: match[3], text: match[2] }));
      last = pattern.lastIndex;
    }
    out.append((text || "").slice(last));
    return out;
  }

  function pointer(doc, ref) {
    if (typeof ref !== "string" || !ref.startsWith("#/")) return undefined;
    let node = doc;
    for (const raw of ref.slice(2).split("/")) {
      const part = raw.replace(/~1/g, "/").replace(/~0/g, "~");
      if (node === null || typeof node !== "object" || !(part in node)) return undefined;
      node = node[part];
    }
    return node;
  }

  // A schema with its $refs replaced by what they point to; a $ref met
  // again inside itself stays a $ref (recursive types).
  function expand(doc, node, seen) {
    if (Array.isArray(node)) return node.map((item) => expand(doc, item, seen));
    if (node === null || typeof node !== "object") return node;
    if (typeof node.$ref === "string") {
      const target = pointer(doc, node.$ref);
      if (target === undefined || seen.has(node.$ref)) return { $ref: node.$ref };
      const inner = new Set(seen);
      inner.add(node.$ref);
      return expand(doc, target, inner);
    }
    const out = {};
    for (const [key, value] of Object.entries(node)) out[key] = expand(doc, value, seen);
    return out;
  }

  function schemaBlock(doc, schema) {
    return el("pre", { class: "log schema", text: JSON.stringify(expand(doc, schema, new Set()), null, 2) });
  }

  function contentBlocks(doc, content) {
    const blocks = [];
    for (const [type, media] of Object.entries(content || {})) {
      blocks.push(el("div", { class: "small muted", text: type }));
      if (media && media.schema) blocks.push(schemaBlock(doc, media.schema));
    }
    return blocks;
  }

  function securityText(doc, operation) {
    const requirements = operation.security || doc.security || [];
    if (requirements.length === 0) return "No login needed.";
    const ways = requirements.map((requirement) => {
      const names = Object.keys(requirement);
      if (names.length === 0) return "none";
      return names.join(" + ");
    });
    return "Credentials: " + ways.join(" or ") + ".";
  }

  function parametersTable(doc, parameters) {
    const rows = parameters.map((raw) => {
      const p = raw.$ref ? pointer(doc, raw.$ref) || raw : raw;
      const schema = expand(doc, p.schema || {}, new Set());
      const type = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "";
      return el("tr", {}, [
        el("td", { class: "mono", text: p.name }),
        el("td", { text: p.in }),
        el("td", { text: p.required ? "yes" : "no" }),
        el("td", { class: "mono", text: type + (schema.format ? " (" + schema.format + ")" : "") }),
        el("td", {}, [inline(p.description || "")]),
      ]);
    });
    return el("div", { class: "scroll" }, [
      el("table", { class: "params" }, [
        el("thead", {}, [
          el("tr", {}, ["name", "in", "required", "type", "description"].map((h) => el("th", { text: h }))),
        ]),
        el("tbody", {}, rows),
      ]),
    ]);
  }

  function operationView(doc, path, method, operation) {
    const id = operation.operationId || method + " " + path;
    const body = el("div", { class: "body" });
    if (operation.description) body.append(el("p", {}, [inline(operation.description)]));
    body.append(el("p", { class: "small muted security", text: securityText(doc, operation) }));
    if (operation.parameters && operation.parameters.length > 0) {
      body.append(el("h3", { text: "Parameters" }), parametersTable(doc, operation.parameters));
    }
    if (operation.requestBody) {
      const requestBody = operation.requestBody.$ref
        ? pointer(doc, operation.requestBody.$ref) || {}
        : operation.requestBody;
      body.append(el("h3", { text: "Request body" + (requestBody.required ? "" : " (optional)") }));
      body.append(...contentBlocks(doc, requestBody.content));
    }
    body.append(el("h3", { text: "Responses" }));
    const responses = el("div", { class: "responses" });
    for (const [status, raw] of Object.entries(operation.responses || {})) {
      const response = raw.$ref ? pointer(doc, raw.$ref) || {} : raw;
      const line = el("div", { class: "response", "data-status": status }, [
        el("strong", { class: "mono", text: status }),
        " ",
        inline(response.description || ""),
      ]);
      const blocks = contentBlocks(doc, response.content);
      if (blocks.length > 0) {
        line.append(el("details", { class: "schema" }, [el("summary", { class: "small", text: "schema" }), ...blocks]));
      }
      responses.append(line);
    }
    body.append(responses);
    const details = el("details", { class: "op", id: "op-" + id, "data-method": method, "data-path": path }, [
      el("summary", {}, [
        el("span", { class: "badge method " + (METHOD_CLASS[method] || "idle"), text: method.toUpperCase() }),
        el("span", { class: "path", text: path }),
        el("span", { class: "muted", text: operation.summary || "" }),
      ]),
      body,
    ]);
    details.dataset.search = [method, path, operation.summary || "", operation.description || "", id]
      .join(" ")
      .toLowerCase();
    return details;
  }

  function render(doc) {
    document.getElementById("api-title").textContent =
      (doc.info && doc.info.title ? doc.info.title : "API") + " " + (doc.info && doc.info.version ? doc.info.version : "");
    document.getElementById("api-description").replaceChildren(inline((doc.info && doc.info.description) || ""));
    document.getElementById("api-server").textContent = (doc.servers || []).map((s) => s.url).join(", ");
    const schemes = (doc.components && doc.components.securitySchemes) || {};
    const security = document.getElementById("api-security");
    for (const [name, scheme] of Object.entries(schemes)) {
      const what = scheme.type === "http" ? "HTTP " + scheme.scheme : scheme.in + " " + scheme.name;
      security.append(el("div", {}, [el("code", { text: name }), " (" + what + "): ", inline(scheme.description || "")]));
    }

    // Tags in the document's order, then any an operation names besides.
    const groups = new Map();
    for (const tag of doc.tags || []) groups.set(tag.name, { tag, operations: [] });
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const method of METHODS) {
        const operation = item[method];
        if (!operation) continue;
        const tags = operation.tags && operation.tags.length > 0 ? operation.tags : ["other"];
        for (const name of tags) {
          if (!groups.has(name)) groups.set(name, { tag: { name }, operations: [] });
          groups.get(name).operations.push([path, method, operation]);
        }
      }
    }
    const list = document.getElementById("api-operations");
    const index = document.getElementById("api-tags");
    list.replaceChildren();
    for (const { tag, operations } of groups.values()) {
      if (operations.length === 0) continue;
      const section = el("section", { class: "card tag", id: "tag-" + tag.name }, [
        el("h2", { text: tag.name }),
        tag.description ? el("p", { class: "muted" }, [inline(tag.description)]) : null,
      ]);
      for (const [path, method, operation] of operations) section.append(operationView(doc, path, method, operation));
      list.append(section);
      index.append(el("a", { href: "#tag-" + tag.name, text: tag.name + " (" + operations.length + ")" }));
    }
    list.removeAttribute("aria-busy");
    list.dataset.operations = String(list.querySelectorAll("details.op").length);

    document.getElementById("api-filter").addEventListener("input", (event) => {
      const words = event.target.value.toLowerCase().split(/\s+/).filter(Boolean);
      for (const section of list.querySelectorAll("section.tag")) {
        let shown = 0;
        for (const op of section.querySelectorAll("details.op")) {
          const match = words.every((word) => op.dataset.search.includes(word));
          op.hidden = !match;
          if (match) shown += 1;
        }
        section.hidden = shown === 0;
      }
    });
    // A link to one operation (#op-list_hosts) opens it.
    const wanted = location.hash.startsWith("#op-") ? document.getElementById(location.hash.slice(1)) : null;
    if (wanted) {
      wanted.open = true;
      wanted.scrollIntoView();
    }
  }

  async function load() {
    const source = document.getElementById("api-json").getAttribute("href");
    try {
      const response = await fetch(source, { headers: { accept: "application/json" } });
      if (!response.ok) throw new Error(source + " answered " + response.status);
      render(await response.json());
    } catch (error) {
      const box = document.getElementById("api-error");
      box.textContent = "Could not show the API document: " + error.message;
      box.hidden = false;
      document.getElementById("api-operations").removeAttribute("aria-busy");
    }
  }

  document.addEventListener("DOMContentLoaded", load);
})();
