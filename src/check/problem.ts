// A problem found by `postwarden check`: the file (and line, when one line
// is at fault) and the reason, printed as "FILE:LINE: REASON".
import { formatOrigin } from "../config/syntax.js";

export interface Problem {
  file: string;
  /** 1-based line number; 0 when no single line is at fault. */
  line: number;
  reason: string;
}

export function formatProblem(problem: Problem): string {
  return `${formatOrigin(problem)}: ${problem.reason}`;
}
