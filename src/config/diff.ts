import { isDeepStrictEqual } from 'node:util';

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The dotted paths at which two configurations differ: down to the leaves of nested objects; a list
 * that differs is named as a whole (`shaping.rules`), as is a value that changed kind. Sorted.
 */
export function changedPaths(a: unknown, b: unknown, prefix = ''): string[] {
  if (isDeepStrictEqual(a, b)) return [];
  if (!isPlainObject(a) || !isPlainObject(b)) return [prefix];
  const out: string[] = [];
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    out.push(...changedPaths(a[k], b[k], prefix === '' ? k : `${prefix}.${k}`));
  }
  return out.sort();
}
