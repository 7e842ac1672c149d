/** Durations in code are branded milliseconds; in YAML they are strings such as '30s' or '72h'. */
export type Ms = number & { readonly __unit: 'ms' };

export const ms = (n: number): Ms => n as Ms;
export const SECOND = ms(1000);
export const MINUTE = ms(60 * SECOND);
export const HOUR = ms(60 * MINUTE);
export const DAY = ms(24 * HOUR);

const UNITS: Record<string, number> = { ms: 1, s: SECOND, m: MINUTE, h: HOUR, d: DAY };
const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;

/** Parses '250ms', '30s', '5m', '72h', '90d'. Returns undefined for anything else (no guessing). */
export function parseDuration(text: string): Ms | undefined {
  const m = DURATION_RE.exec(text.trim());
  if (!m) return undefined;
  const unit = UNITS[m[2] as string];
  if (unit === undefined) return undefined;
  return ms(Math.round(Number(m[1]) * unit));
}

export function formatDuration(value: Ms): string {
  for (const [unit, size] of [['d', DAY], ['h', HOUR], ['m', MINUTE], ['s', SECOND]] as const) {
    if (value >= size && value % size === 0) return `${value / size}${unit}`;
  }
  return `${value}ms`;
}

/** Parses sizes such as '25MB', '512KB', '1024' (bytes). */
export function parseSize(text: string): number | undefined {
  const m = /^(\d+)\s*(B|KB|MB|GB)?$/i.exec(text.trim());
  if (!m) return undefined;
  const mult = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 }[(m[2] ?? 'B').toUpperCase() as 'B'];
  return Number(m[1]) * mult;
}
