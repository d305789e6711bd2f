// The public API of instill. Everything else under src/ is internal.
export { InstillError, ErrorCode } from './errors.js';
export type { ErrorCodeValue } from './errors.js';
export { Tensor } from './tensor.js';
export type { DType, Device, TensorData, TensorOptions } from './tensor.js';
export { kernels } from './kernels.js';
export type {
  MatmulOptions,
  LoraLinearOptions,
  LoraLinearBackwardOptions,
  MaskedCrossEntropyOptions,
  LinearCrossEntropyOptions,
  CrossEntropyResult,
} from './kernels.js';
export { runtime } from './runtime.js';
export type { RuntimeInfo } from './runtime.js';
