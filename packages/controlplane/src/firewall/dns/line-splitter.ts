// Newline-delimited lines out of a text stream's chunks, for both ends of the DNS gate's control
// channel (the gate's requests, the daemon's replies and decisions).

/**
 * Returns a chunk handler that calls `onLine` for every complete line. A newline is searched for in
 * each chunk only, so a large line arriving in many chunks costs linear time. A line growing past
 * `maxChars` is reported once (`onOversize`) and dropped up to its newline.
 */
export function lineSplitter(
  maxChars: number,
  onLine: (line: string) => void,
  onOversize: () => void = () => undefined,
): (text: string) => void {
  const parts: string[] = [];
  let size = 0;
  let skipping = false;
  return (text) => {
    let start = 0;
    let nl: number;
    while ((nl = text.indexOf("\n", start)) >= 0) {
      const piece = text.slice(start, nl);
      start = nl + 1;
      const line = parts.length === 0 ? piece : parts.join("") + piece;
      parts.length = 0;
      size = 0;
      if (skipping) skipping = false;
      else onLine(line);
    }
    if (start >= text.length || skipping) return;
    parts.push(text.slice(start));
    size += text.length - start;
    if (size > maxChars) {
      parts.length = 0;
      size = 0;
      skipping = true;
      onOversize();
    }
  };
}
