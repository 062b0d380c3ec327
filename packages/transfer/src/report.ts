/** What a finished transfer says about itself: the counters behind progress, per object and in total. */
export interface ObjectReport {
  readonly id: string;
  readonly kind: 'image' | 'layer';
  readonly size: number;
  /**
   * present: nothing to do; derived: computed from objects already held (ObjectDescription.derivedFrom), nothing
   * moved; transferred: pieces moved (some may have come from a resume or a seed).
   */
  readonly action: 'present' | 'derived' | 'transferred';
  readonly piecesTotal: number;
  readonly piecesSent: number;
  readonly piecesResumed: number;
  readonly piecesSeeded: number;
}

export interface TransferReport {
  readonly direction: 'download' | 'upload';
  readonly objects: ObjectReport[];
  readonly bytesTotal: number;
  /** Raw bytes of pieces that crossed the network and were verified. */
  readonly bytesTransferred: number;
  /** Bytes on the wire: frame headers and (possibly compressed) payloads, including failed attempts. */
  readonly bytesOnWire: number;
  /** Bytes that did not cross the network (already held, derived, resumed, seeded). */
  readonly bytesSaved: number;
  /** Pieces that arrived but were refused (bad hash) or re-sent after an interrupted request. */
  readonly piecesRetried: number;
  readonly seconds: number;
  readonly compression: boolean;
  readonly compressionReason: string;
  /** Uploads: pieces went over connections the server upgraded (false: none sent, or plain PUTs behind a proxy). */
  readonly upgraded: boolean;
}
