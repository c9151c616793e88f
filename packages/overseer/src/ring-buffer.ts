// A fixed-capacity FIFO that overwrites its oldest entry when full (drop-oldest). One array,
// allocated once, so pushing and shifting cost no allocation on the publish path.

/** A bounded FIFO queue with drop-oldest overflow. */
export class RingBuffer<T> {
  readonly capacity: number;
  #items: (T | undefined)[];
  #head = 0;
  #length = 0;

  constructor(capacity: number) {
    this.capacity = capacity;
    this.#items = new Array<T | undefined>(capacity).fill(undefined);
  }

  /** Number of queued items. */
  get length(): number {
    return this.#length;
  }

  /** Appends `item`; when full, discards the oldest item first and returns true. */
  push(item: T): boolean {
    const cap = this.capacity;
    if (this.#length === cap) {
      this.#items[this.#head] = item;
      this.#head = this.#head + 1 === cap ? 0 : this.#head + 1;
      return true;
    }
    let tail = this.#head + this.#length;
    if (tail >= cap) tail -= cap;
    this.#items[tail] = item;
    this.#length++;
    return false;
  }

  /** Removes and returns the oldest item, or undefined when empty. */
  shift(): T | undefined {
    if (this.#length === 0) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head] = undefined; // release the reference for the GC
    this.#head = this.#head + 1 === this.capacity ? 0 : this.#head + 1;
    this.#length--;
    return item;
  }

  /** Empties the queue and returns how many items were discarded. */
  clear(): number {
    const n = this.#length;
    this.#items.fill(undefined);
    this.#head = 0;
    this.#length = 0;
    return n;
  }
}
