/*
 * Which frames of a generation (the bot's answer) to draw, by docs/protocol.md's rules on
 * `attempt` and final frames. A generation whose worker or engine was lost mid-answer runs
 * again; its frames say which run (`attempt`) they belong to.
 */

/** Frames after which a generation never runs again. */
export const FINAL_FRAME_TYPES = new Set(["answer.done", "generation.failed", "generation.cancelled"]);

/** What to do with a frame, as `GenerationTracker.judge` says. */
export const APPLY = "apply";
export const RESTART = "restart"; // drop what the earlier run streamed, then apply
export const IGNORE = "ignore";

/** A frame's `generation_id` as a string (ids may be numbers or strings), or null. */
export function generationIdOf(frame) {
  return frame.generation_id == null ? null : String(frame.generation_id);
}

export class GenerationTracker {
  constructor() {
    this.attempts = new Map(); // generation id -> the latest attempt seen in its frames
    this.ended = new Set(); // generation ids that are done, failed or cancelled
  }

  /**
   * APPLY, RESTART or IGNORE for a frame. Frames of no generation are applied. A final frame
   * always counts, from whichever run it comes (`answer.done` carries the stored answer); after
   * it, every other frame of that generation is ignored (a lost run's, or a requeue that raced a
   * stop). For a generation in progress, a higher `attempt` than seen restarts the answer and a
   * lower one is a lost run's late frame.
   */
  judge(frame) {
    const id = generationIdOf(frame);
    if (id === null) return APPLY;
    if (FINAL_FRAME_TYPES.has(frame.type)) {
      this.ended.add(id);
      return APPLY;
    }
    if (this.ended.has(id)) return IGNORE;
    if (!Number.isInteger(frame.attempt)) return APPLY;
    const seen = this.attempts.get(id) ?? 0;
    if (frame.attempt < seen) return IGNORE;
    if (frame.attempt === seen) return APPLY;
    this.attempts.set(id, frame.attempt);
    return seen > 0 ? RESTART : APPLY;
  }

  /** The page redrew everything (no streamed text is left): forget the attempts seen. Ended
   * generations stay ended. */
  resetAttempts() {
    this.attempts.clear();
  }
}
