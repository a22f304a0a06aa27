/**
 * The CLI's progress for its long steps (download, weight repacking, perplexity windows), on stderr. On a terminal:
 * one line redrawn in place, a bar with the amount, the rate and the time left. Otherwise (a log file, a pipe), where
 * a redrawn line is noise: a plain line when a step ends, and at each quarter of a step that takes a while.
 *
 * Hand-written rather than cli-progress: that package is CommonJS requiring Node built-ins, which the ESM CLI bundle
 * cannot require without a shim in the build, and as a runtime dependency it would bring six packages to every
 * install of a library that has none, browser users' included. What it would do here is one redrawn line.
 */
import { formatBytes } from './plan/arena.js';

export interface ProgressStream {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** Redraws at most this often: a terminal cannot show more, and each redraw costs a write. */
const REDRAW_MS = 100;
/** A step shorter than this gets only its closing line in a log. */
const QUIET_MS = 2000;
/** The widest bar; a narrow terminal gets a shorter one, or none. */
const BAR = 30;

class Progress {
  private readonly t0 = performance.now();
  /** the first amount reported: a resumed download's rate counts only what this run transferred */
  private first: number | undefined;
  private loaded = 0;
  private total: number | undefined;
  private lastDraw = -Infinity;
  private quarter = 1;
  private shown = false;
  private ended = false;

  /** `unit` 'bytes' shows amounts as sizes; another word (tokens) follows the counts. */
  constructor(
    private readonly label: string,
    private readonly unit: string,
    private readonly out: ProgressStream,
  ) {}

  update(loaded: number, total: number | undefined): void {
    if (this.ended) return;
    this.first ??= loaded;
    this.loaded = loaded;
    this.total = total;
    const t = performance.now();
    if (this.out.isTTY) {
      if (t - this.lastDraw >= REDRAW_MS || loaded === total) this.draw(t);
      return;
    }
    // a log gets the quarters of a long step as lines
    while (total && this.quarter < 4 && loaded >= (total * this.quarter) / 4) {
      if (t - this.t0 >= QUIET_MS) this.out.write(this.line(t) + '\n');
      this.quarter++;
    }
  }

  /** A line of its own (a perplexity window's result), above the bar on a terminal. */
  log(line: string): void {
    if (this.out.isTTY && this.shown && !this.ended) {
      this.out.write(`\r\x1b[K${line}\n`);
      this.draw(performance.now());
    } else {
      this.out.write(line + '\n');
    }
  }

  /**
   * The closing line: how much, in how long, how fast. `ok` false (the step failed): only the terminal's line is
   * ended, so that the error that follows is the one line a failure prints.
   */
  end(ok = true): void {
    if (this.ended || this.first === undefined) return;
    this.ended = true;
    if (!ok) {
      if (this.out.isTTY && this.shown) this.out.write('\n');
      return;
    }
    const t = performance.now();
    const rate = this.rate(t);
    const pct = this.total && this.loaded >= this.total ? ' 100%' : '';
    const text = `${this.label}${pct} ${this.amount(this.loaded)} in ${((t - this.t0) / 1000).toFixed(1)} s${rate ? ` (${rate})` : ''}`;
    this.out.write((this.out.isTTY ? '\r\x1b[K' : '') + text + '\n');
  }

  private amount(n: number): string {
    return this.unit === 'bytes' ? formatBytes(n) : `${n} ${this.unit}`;
  }

  private rate(t: number): string {
    const seconds = (t - this.t0) / 1000;
    const done = this.loaded - (this.first ?? 0);
    if (seconds <= 0 || done <= 0) return '';
    const r = done / seconds;
    return this.unit === 'bytes' ? `${formatBytes(r)}/s` : `${r.toFixed(0)} ${this.unit}/s`;
  }

  private eta(t: number): string {
    const seconds = (t - this.t0) / 1000;
    const done = this.loaded - (this.first ?? 0);
    if (!this.total || done <= 0) return '';
    const left = ((this.total - this.loaded) * seconds) / done;
    const s = Math.ceil(left);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
    return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`;
  }

  /** `download 40% 1.6 GiB of 4.0 GiB, 35.2 MiB/s, 1m08s left` */
  private line(t: number): string {
    const pct = this.total ? ` ${Math.floor((100 * this.loaded) / this.total)}%` : '';
    const of = this.total ? ` of ${this.amount(this.total)}` : '';
    const rate = this.rate(t);
    const eta = this.eta(t);
    return `${this.label}${pct} ${this.amount(this.loaded)}${of}${rate ? `, ${rate}` : ''}${eta ? `, ${eta} left` : ''}`;
  }

  private draw(t: number): void {
    this.lastDraw = t;
    this.shown = true;
    const fraction = this.total ? Math.min(1, this.loaded / this.total) : 0;
    const pct = this.total ? ` ${String(Math.floor(100 * fraction)).padStart(3)}%` : '';
    const rate = this.rate(t);
    const eta = this.eta(t);
    const figures = `${pct} ${this.amount(this.loaded)}${this.total ? ` / ${this.amount(this.total)}` : ''}${rate ? `  ${rate}` : ''}${eta ? `  ETA ${eta}` : ''}`;
    const columns = this.out.columns ?? 80;
    // the bar takes what the figures leave of the line
    const width = Math.min(BAR, columns - 1 - this.label.length - 3 - figures.length - 1);
    const filled = Math.round(fraction * width);
    const bar = this.total && width >= 5 ? ` [${'█'.repeat(filled)}${'░'.repeat(width - filled)}]` : '';
    let text = `${this.label}${bar}${figures}`;
    if (text.length >= columns) text = text.slice(0, columns - 1);
    this.out.write(`\r${text}\x1b[K`);
  }
}

/**
 * One Progress per phase of a task that reports `{ phase, loaded, total }`, labelled with the phase's name and counted
 * in its unit from `units` (default bytes); a new phase ends the one before.
 */
function phasedProgress(out: ProgressStream, units: Record<string, string>) {
  let current: { phase: string; progress: Progress } | undefined;
  return {
    update({ phase, loaded, total }: { phase: string; loaded: number; total: number | undefined }) {
      if (current?.phase !== phase) {
        current?.progress.end();
        current = { phase, progress: new Progress(phase, units[phase] ?? 'bytes', out) };
      }
      current.progress.update(loaded, total);
    },
    log(line: string) {
      if (current) current.progress.log(line);
      else out.write(line + '\n');
    },
    /** ends the phase under way; `ok` false after a failure (see Progress.end) */
    end(ok = true) {
      current?.progress.end(ok);
      current = undefined;
    },
  };
}

/**
 * Runs a task with its phases' progress on `out`: the phase under way is ended when the task ends, as a closing line
 * when it succeeds, and with only the terminal's line ended when it fails (the error is then the one line printed).
 */
export async function withProgress<T>(
  out: ProgressStream,
  units: Record<string, string>,
  task: (progress: ReturnType<typeof phasedProgress>) => Promise<T>,
): Promise<T> {
  const progress = phasedProgress(out, units);
  try {
    const result = await task(progress);
    progress.end();
    return result;
  } catch (err) {
    progress.end(false);
    throw err;
  }
}
