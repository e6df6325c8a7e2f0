/*
 * A bot answer's knowledge-base sources, shared by the chat and the desk: which links may be
 * followed, and the answer's text with its citation markers ("[1]") as small links to the
 * source they name. Text is only ever set as text; a URL becomes a link only if it is one of
 * ours (/help/...) or plainly http(s).
 */

const MARKER = /\[(\d{1,3})\]/g;

/** The URL if it may be a link (a help page of this site, or http/https), else null. */
export function safeUrl(url) {
  if (typeof url !== "string" || url === "") return null;
  if (url.startsWith("/help/")) return url;
  if (!/^https?:\/\//i.test(url)) return null;
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

/** A link that opens in a new tab, without giving that tab a hold on this one. */
export function externalLink(href, className, text) {
  const link = document.createElement("a");
  if (className) link.className = className;
  link.href = href;
  link.target = "_blank";
  link.rel = "noopener";
  link.textContent = text;
  return link;
}

/**
 * Fills `el` with `text`, each "[n]" that names one of `sources` (by its `n`) drawn as a small
 * superscript link to it (its text stays "[n]", so the answer reads and copies the same). With
 * no sources, or a marker that names none, the text is left as it is.
 */
export function fillCitedText(el, text, sources) {
  const value = String(text ?? "");
  const byNumber = new Map();
  for (const source of Array.isArray(sources) ? sources : []) {
    if (source && Number.isInteger(source.n)) byNumber.set(source.n, source);
  }
  if (byNumber.size === 0) {
    el.textContent = value;
    return;
  }
  const parts = [];
  let last = 0;
  for (const match of value.matchAll(MARKER)) {
    const source = byNumber.get(Number(match[1]));
    if (!source) continue;
    if (match.index > last) parts.push(value.slice(last, match.index));
    const href = safeUrl(source.url);
    const sup = document.createElement("sup");
    sup.className = "cite";
    if (href) {
      const link = externalLink(href, "cite__link", match[0]);
      link.title = source.heading || source.title || "";
      sup.append(link);
    } else {
      sup.textContent = match[0];
    }
    parts.push(sup);
    last = match.index + match[0].length;
  }
  if (last < value.length) parts.push(value.slice(last));
  el.replaceChildren(...parts);
}
