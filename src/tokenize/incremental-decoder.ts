// Incremental detokenization for streaming generation. Decoding each new id on its own goes wrong
// in two ways. A byte-fallback or byte-level token may carry only part of a UTF-8 character, and
// SentencePiece decoders strip the leading space of the first token they see ("▁world" alone
// decodes to "world"). So each step decodes a short window that starts a few tokens back and
// emits only the text past what that window's prefix already produced.
//
// NOTE: with `clean_up_tokenization_spaces` on (the default when tokenizer_config.json omits it),
// the decode rewrites " ." to "." and similar. A space emitted in one delta cannot be taken back,
// so the streamed text can then differ from the full decode around punctuation.

const REPLACEMENT_CHARACTER = "\uFFFD";

export class IncrementalDecoder {
  /** Start of the decoding window: the earliest id whose text is still needed as context. */
  private prefixOffset = 0;
  /** Ids before this index have been emitted. */
  private readOffset = 0;
  private ids: readonly number[] = [];

  constructor(private readonly decode: (ids: readonly number[]) => string) {}

  /**
   * Returns the text added since the previous call. `ids` is every id generated so far and must
   * extend the previous call's list. Text ending in an incomplete UTF-8 character is held back
   * until a later id completes it, or until {@link flush}.
   */
  next(ids: readonly number[]): string {
    if (ids.length < this.ids.length) {
      throw new Error(`IncrementalDecoder.next got ${ids.length} ids after ${this.ids.length}`);
    }
    this.ids = ids;

    const prefixText = this.decode(ids.slice(this.prefixOffset, this.readOffset));
    const windowText = this.decode(ids.slice(this.prefixOffset));
    if (windowText.length <= prefixText.length || windowText.endsWith(REPLACEMENT_CHARACTER)) {
      return "";
    }

    this.prefixOffset = this.readOffset;
    this.readOffset = ids.length;
    return windowText.slice(prefixText.length);
  }

  /** Returns any held-back text, incomplete characters included as U+FFFD, at the end of generation. */
  flush(): string {
    const prefixText = this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const windowText = this.decode(this.ids.slice(this.prefixOffset));
    this.prefixOffset = this.readOffset = this.ids.length;
    return windowText.slice(prefixText.length);
  }
}
