// One key per finding that cycles (not looked at →) present → uncertain → absent → present, shown beside the finding.
// A job may name its own keys ({label: key}); the others get free keys in order. Keys the viewer
// already uses for tools and navigation are never handed out.

export const CYCLE = Object.freeze({
  'not-looked-at': 'present',
  absent: 'present',
  present: 'uncertain',
  uncertain: 'absent',
});

/** Keys taken by the viewer's other shortcuts (see SHORTCUTS) and the pages' own (Ctrl+S is Ctrl-only). */
export const RESERVED = new Set('wpzregithvjkynuf0123+-[]'.split(''));

const POOL = [...'abcdlmoqsx456789', ...'ABCDLMOQSX'];

/** The hotkey of each label: the job's choice when it is a free single character, else the next free key. */
export function assignHotkeys(labels, configured = {}) {
  const used = new Set();
  const keys = new Map();
  for (const label of labels) {
    const key = String(configured?.[label] ?? '');
    if (key.length === 1 && !RESERVED.has(key.toLowerCase()) && !used.has(key)) {
      keys.set(label, key);
      used.add(key);
    }
  }
  const free = POOL.filter((k) => !used.has(k));
  for (const label of labels) {
    if (keys.has(label)) continue;
    const key = free.shift();
    if (key === undefined) break;
    keys.set(label, key);
    used.add(key);
  }
  return keys;
}

/** The label whose hotkey `event` is (letters are case-sensitive: Shift+A is not A), or undefined. */
export function labelForKey(keys, event) {
  if (event.key.length !== 1) return undefined;
  for (const [label, key] of keys) if (key === event.key) return label;
  return undefined;
}

/** How a key is written beside its finding. */
export function keyText(key) {
  return key >= 'A' && key <= 'Z' ? `Shift+${key}` : key.toUpperCase();
}
