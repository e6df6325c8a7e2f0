/*
 * The customer's rating of a resolved conversation (docs/protocol.md, `rating.submit`): five
 * faces as a native radio group (arrow keys move and choose, Space or Enter chooses), an
 * optional comment with a counter, and the thanks once it is stored. It sends nothing itself:
 * `onSubmit(score, comment)` does, and says whether the frame went out. Comments are only ever
 * shown as text.
 */
import { charCount } from "../js/text.js";

export const SCORE_LABELS = { 1: "Very bad", 2: "Bad", 3: "Okay", 4: "Good", 5: "Excellent" };

export class RatingForm {
  /**
   * @param {object} els - form, thanks (the elements of templates/chat/index.html)
   * @param {object} options
   * @param {number} options.maxChars - RATING_COMMENT_MAX_CHARS
   * @param {(score: number, comment: string) => boolean} options.onSubmit - sends the rating;
   *   false when it could not be sent
   */
  constructor({ form, thanks }, { maxChars = 1000, onSubmit }) {
    this.form = form;
    this.thanks = thanks;
    this.maxChars = maxChars;
    this.onSubmit = onSubmit;
    this.comment = form.querySelector("#rating-comment");
    this.counter = form.querySelector("#rating-counter");
    this.error = form.querySelector("#rating-error");
    this.submitButton = form.querySelector("#rating-submit");
    this.radios = [...form.querySelectorAll("input[name='score']")];
    this.conversationId = null; // the conversation the form (and its draft) is for
    this.sending = false;
    this.bind();
  }

  /** The score chosen, or null. */
  get score() {
    const checked = this.radios.find((radio) => radio.checked);
    return checked ? Number(checked.value) : null;
  }

  /** Asks for a rating of conversation `conversationId`; a draft for the same one is kept. */
  ask(conversationId) {
    if (this.conversationId !== conversationId) this.reset(conversationId);
    this.thanks.hidden = true;
    this.form.hidden = false;
  }

  /** Shows the rated state: `rating` ({score, comment}), or just `detail` (rated elsewhere). */
  showRated(rating, detail = null) {
    this.setSending(false);
    this.form.hidden = true;
    const text = this.thanks.querySelector(".rating-thanks__text");
    const comment = this.thanks.querySelector(".rating-thanks__comment");
    this.thanks.querySelector(".rating__face")?.remove();
    const score = Number(rating?.score);
    let words;
    if (score >= 1 && score <= 5) {
      words = `Thanks for your feedback! You rated this conversation ${score} out of 5 (${SCORE_LABELS[score]}).`;
      const face = this.form.querySelector(`label[data-score="${score}"] .rating__face`)?.cloneNode(true);
      if (face) {
        face.classList.add("rating__face--chosen");
        face.dataset.score = String(score);
        this.thanks.prepend(face);
      }
    } else {
      words = detail || "Thanks for your feedback!";
    }
    if (text.textContent !== words) text.textContent = words; // role=status: announce once
    comment.hidden = !rating?.comment;
    comment.textContent = rating?.comment ? `Your comment: “${rating.comment}”` : "";
    this.thanks.hidden = false;
  }

  hide() {
    this.form.hidden = true;
    this.thanks.hidden = true;
  }

  /** The rating frame is on its way (true) or was answered (false). */
  setSending(sending) {
    this.sending = sending;
    this.submitButton.disabled = sending;
    this.submitButton.textContent = sending ? "Sending…" : "Send rating";
    this.form.setAttribute("aria-busy", String(sending));
  }

  showError(text) {
    this.setSending(false);
    this.error.textContent = text;
  }

  /** Moves the keyboard to the faces: the chosen one, else the first. */
  focus() {
    (this.radios.find((radio) => radio.checked) || this.radios[0])?.focus();
  }

  reset(conversationId) {
    this.conversationId = conversationId;
    this.form.reset();
    this.error.textContent = "";
    this.setSending(false);
    this.updateCounter();
  }

  updateCounter() {
    const count = charCount(this.comment.value.trim());
    const over = count > this.maxChars;
    this.counter.textContent = `${count} / ${this.maxChars}`;
    this.counter.classList.toggle("rating__counter--warn", !over && count >= this.maxChars * 0.9);
    this.counter.classList.toggle("rating__counter--over", over);
    this.comment.setAttribute("aria-invalid", String(over));
    return over;
  }

  submit() {
    if (this.sending) return;
    const score = this.score;
    if (score === null) {
      this.error.textContent = "Please choose a face from 1 (very bad) to 5 (excellent).";
      this.focus();
      return;
    }
    if (this.updateCounter()) {
      this.error.textContent = `Please shorten your comment to ${this.maxChars} characters.`;
      this.comment.focus();
      return;
    }
    this.error.textContent = "";
    if (this.onSubmit(score, this.comment.value.trim())) this.setSending(true);
  }

  bind() {
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    // Arrow keys and Space are the radio group's own; Enter chooses the focused face too
    // (instead of sending the form before the customer had a chance to add a comment).
    this.form.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" || !event.target.matches("input[name='score']")) return;
      event.preventDefault();
      event.target.checked = true;
      event.target.dispatchEvent(new Event("change", { bubbles: true }));
    });
    this.form.addEventListener("change", (event) => {
      if (event.target.matches("input[name='score']") && this.error.textContent) this.error.textContent = "";
    });
    this.comment.addEventListener("input", () => {
      const over = this.updateCounter();
      if (!over && this.error.textContent.startsWith("Please shorten")) this.error.textContent = "";
      this.comment.style.height = "auto";
      this.comment.style.height = `${this.comment.scrollHeight}px`; // capped by max-height in CSS
    });
  }
}
