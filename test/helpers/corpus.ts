import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The real bounce corpus (DESIGN §9): ../shared/corpus/bounces beside the repository when it is there
 * (the source of truth, which may grow), else the copy kept in test/fixtures/bounce-corpus (BSD-2 /
 * its LICENSE travels with it), so a clone anywhere — /tmp included — runs the same tests.
 */
const SHARED = fileURLToPath(new URL('../../../shared/corpus/bounces/', import.meta.url));
const VENDORED = fileURLToPath(new URL('../fixtures/bounce-corpus/', import.meta.url));

export const CORPUS_DIR = existsSync(join(SHARED, 'dev.jsonl')) ? SHARED : VENDORED;

/** The folder of the corpus's .eml files, as a URL (for `new URL(name, CORPUS_EMAILS)`). */
export const CORPUS_EMAILS = new URL(`file://${join(CORPUS_DIR, 'emails')}/`);
