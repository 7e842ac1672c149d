/**
 * A pure function of a string, remembered for up to `maxEntries` distinct arguments; past that the
 * memory starts afresh (cheaper than tracking recency, and right for values that repeat heavily,
 * such as user agents and account names on a busy pixel).
 */
export function memoize<V>(compute: (key: string) => V, maxEntries: number): (key: string) => V {
  const seen = new Map<string, V>();
  return (key) => {
    let v = seen.get(key);
    if (v === undefined && !seen.has(key)) {
      v = compute(key);
      if (seen.size >= maxEntries) seen.clear();
      seen.set(key, v);
    }
    return v as V;
  };
}
