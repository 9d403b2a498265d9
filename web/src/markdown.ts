// A tiny Markdown subset for channel descriptions, built as DOM nodes whose
// text is set with textContent: user text never reaches innerHTML, so no
// markup in a description can become an element.
//
//   paragraphs (blank line), line breaks, *em* / _em_, **strong** / __strong__,
//   `code`, [text](http(s) link), and bare http(s) URLs.
// Links open with rel="noopener noreferrer nofollow"; any other scheme
// (javascript:, data:, ...) stays plain text.

const SAFE_URL = /^https?:\/\/[^\s<>"']+$/i;

function safeUrl(url: string): string | null {
  if (!SAFE_URL.test(url)) return null;
  try {
    const u = new URL(url);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

function link(href: string, text: string): HTMLAnchorElement {
  const a = document.createElement('a');
  a.href = href;
  a.rel = 'noopener noreferrer nofollow';
  a.target = '_blank';
  a.textContent = text;
  return a;
}

// Inline markup of one line into `parent`. Underscores count only at word
// edges, so snake_case_names stay as typed.
const INLINE =
  /\*\*(?<strong>.+?)\*\*|(?<!\w)__(?<strong2>.+?)__(?!\w)|\*(?<em>[^*]+?)\*|(?<!\w)_(?<em2>[^_]+?)_(?!\w)|`(?<code>[^`]+)`|\[(?<text>[^\]]+)\]\((?<href>[^)\s]+)\)|(?<url>https?:\/\/[^\s<>()]+)/;

function inline(text: string, parent: Node): void {
  let rest = text;
  while (rest) {
    const m = INLINE.exec(rest);
    if (!m || !m.groups) {
      parent.appendChild(document.createTextNode(rest));
      return;
    }
    const g = m.groups;
    if (m.index > 0) parent.appendChild(document.createTextNode(rest.slice(0, m.index)));
    let consumed = m.index + m[0].length;
    const strong = g.strong ?? g.strong2;
    const em = g.em ?? g.em2;
    if (strong !== undefined) {
      const el = document.createElement('strong');
      inline(strong, el);
      parent.appendChild(el);
    } else if (em !== undefined) {
      const el = document.createElement('em');
      inline(em, el);
      parent.appendChild(el);
    } else if (g.code !== undefined) {
      const el = document.createElement('code');
      el.textContent = g.code;
      parent.appendChild(el);
    } else if (g.text !== undefined) {
      const href = safeUrl(g.href);
      parent.appendChild(href ? link(href, g.text) : document.createTextNode(m[0]));
    } else if (g.url !== undefined) {
      // Trailing punctuation ends a sentence, not the address.
      const url = g.url.replace(/[.,;:!?]+$/, '');
      const href = safeUrl(url);
      parent.appendChild(href ? link(href, url) : document.createTextNode(url));
      consumed = m.index + url.length;
    }
    rest = rest.slice(consumed);
  }
}

export function renderMarkdown(src: string): DocumentFragment {
  const frag = document.createDocumentFragment();
  const paras = src.replace(/\r\n?/g, '\n').split(/\n\s*\n/);
  for (const para of paras) {
    const text = para.trim();
    if (!text) continue;
    const p = document.createElement('p');
    text.split('\n').forEach((line, i) => {
      if (i > 0) p.appendChild(document.createElement('br'));
      inline(line, p);
    });
    frag.appendChild(p);
  }
  return frag;
}
