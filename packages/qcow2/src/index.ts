// @roamdesk/qcow2: pure qcow2 header parsing and the policy for untrusted layers and imported images.
// No I/O: callers read the leading bytes (QCOW2_MAX_HEADER_BYTES, or the whole file if smaller) themselves.

export { backingNameField } from './backing-field.ts';
export { detectImageFormat } from './detect.ts';
export { parseQcow2Header } from './header.ts';
export {
  checkImageHeader, checkUntrustedLayer, DEFAULT_LAYER_POLICY, listImageViolations, listUntrustedLayerViolations,
} from './policy.ts';
export { QCOW2_MAX_HEADER_BYTES } from './constants.ts';
export type {
  ImageFormat, LayerPolicy, ParseOptions, Qcow2Extension, Qcow2FeatureName, Qcow2Header,
} from './types.ts';
export * from './errors.ts';
