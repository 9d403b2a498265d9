// Home page: the channels that are live now, from /api/v1/live.
interface LiveChannel {
  slug: string;
  title?: string;
  owner?: string;
  viewers?: number;
}

async function load(): Promise<void> {
  const list = document.getElementById('live') as HTMLUListElement;
  try {
    const res = await fetch('/api/v1/live', { headers: { Accept: 'application/json' } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const body = (await res.json()) as { channels: LiveChannel[] };
    list.replaceChildren();
    for (const ch of body.channels) {
      const li = document.createElement('li');
      const a = document.createElement('a');
      a.href = `/watch/${encodeURIComponent(ch.slug)}`;
      // textContent, never innerHTML: titles are user-supplied.
      a.textContent = ch.title || ch.slug;
      li.append(a);
      if (ch.owner) {
        const by = document.createElement('div');
        by.className = 'muted';
        by.textContent = ch.owner;
        li.append(by);
      }
      list.append(li);
    }
    if (body.channels.length === 0) {
      const li = document.createElement('li');
      li.className = 'muted';
      li.textContent = 'Nobody is live right now.';
      list.append(li);
    }
  } catch {
    list.replaceChildren();
  }
}

void load();
setInterval(() => void load(), 10000);
