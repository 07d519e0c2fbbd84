// Elements are built without HTML strings: text always goes through text nodes, so
// nothing a job, a run or its output says can ever become markup.

/** Create an element: h("a", {href: "#/", class: "x", onclick: fn}, "text", child). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if ((typeof value === "boolean" && key in el) || key === "value") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

/** Append children (nodes, strings, numbers, nested arrays; null and false are skipped). */
export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replace every child of ``el``. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A definition list from [term, description] pairs; pairs with an empty description are left out. */
export function props(pairs) {
  const dl = h("dl", { class: "props" });
  for (const [term, description] of pairs) {
    if (description === null || description === undefined || description === "") continue;
    dl.append(h("dt", {}, term), h("dd", {}, description));
  }
  return dl;
}

/** A table cell labelled for the narrow (card) layout, its content in one box. */
export function cell(label, content, className) {
  return h("td", { "data-label": label, class: className }, h("div", {}, content));
}

/** A unique id for label/aria wiring. */
let counter = 0;
export function uid(prefix) {
  counter += 1;
  return `${prefix}-${counter}`;
}
