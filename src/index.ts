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
export type { DeviceMemory, OpProfileRow, RuntimeInfo } from './runtime.js';

// Instruction data: tokenizers, chat templates, dataset formats, masking, packing.
export { loadTokenizer, Tokenizer } from './data/tokenizer.js';
export type { TokenizerConfig, EncodeOptions } from './data/tokenizer.js';
export { ChatTemplate, resolveChatTemplate, templateWarnings, NAMED_CHAT_TEMPLATES } from './data/chat_template.js';
export type { ChatMessage, RenderOptions } from './data/chat_template.js';
export { detectFormat, toExample, DATASET_FORMATS, ALPACA_INPUT_SEPARATOR } from './data/formats.js';
export type { DatasetFormat, Example } from './data/formats.js';
export { readRecords } from './data/readers.js';
export type { RawRecord, FileKind } from './data/readers.js';
export { maskExample, TRAIN_ON } from './data/masking.js';
export type { TrainOn, MaskedExample, MaskingOptions } from './data/masking.js';
export { TRUNCATIONS } from './data/truncation.js';
export type { Truncation } from './data/truncation.js';
export { loadDataset, TokenizedDataset } from './data/dataset.js';
export type { DatasetOptions, FileReport, RecordIssue } from './data/dataset.js';
export { assembleBatch, exampleLengths, targetsFromLabels, IGNORE_INDEX } from './data/batch.js';
export type { Batch, ExampleSource } from './data/batch.js';
export { BatchLoader, createDataLoaders } from './data/loader.js';
export type { LoaderOptions, DataLoadersOptions, DataCursor, LoadedBatch } from './data/loader.js';
export { splitIndices } from './data/split.js';
export type { SplitOptions } from './data/split.js';
export { inspectData, formatInspect, defaultMaxSeqLen } from './data/inspect.js';
export type { InspectResult, InspectOptions } from './data/inspect.js';
export { loadModel, randomModel, Model, LORA_TARGETS, ACTIVATION_MODES } from './model/model.js';
export type {
  ActivationMode,
  LoadModelOptions,
  LoraOptions,
  LoraConfig,
  LoraTarget,
  GenerationConfig,
  LossAndGradsOptions,
  LossAndGradsResult,
  GenerateOptions,
  GenerateResult,
  AdamwOptions,
  AdamwState,
} from './model/model.js';
export type { BatchInput, TokenRows } from './model/inputs.js';
export type { ModelSpec, RopeScaling } from './model/config.js';
export { attentionFlops, gpuPeakTflops, loraStepFlops, trainingFlops } from './model/flops.js';
export type { FlopsLora, StepFlops } from './model/flops.js';

// Training: the Trainer, schedules, checkpoints, adapter merge.
export { Trainer, engineBatch } from './train/trainer.js';
export type { TrainerOptions, StepEvent, EvalEvent, CheckpointEvent, TrainResult } from './train/trainer.js';
export { createSchedule, SCHEDULES } from './train/schedule.js';
export type { ScheduleName, ScheduleOptions } from './train/schedule.js';
export { loadCheckpoint, loadLatestCheckpoint, listCheckpoints } from './train/checkpoint.js';
export type { TrainerState } from './train/checkpoint.js';
export { exactMatch, readPromptAnswers } from './train/exact_match.js';
export type { ExactMatchResult } from './train/exact_match.js';
export { resolveTrainConfig, settingsFromYaml } from './train/config.js';
export type { TrainConfig } from './train/config.js';
export { prepareTraining } from './train/session.js';
export { mergeAdapter, readAdapterConfig } from './adapter/merge.js';
export { dropoutSeedOf } from './train/trainer.js';

// The bundled demo: the tiny base model instill makes for itself (scripts/make-demo-model.mjs).
export { makeDemoModel, DEMO_SEED } from './demo/make_model.js';
export type { MakeDemoOptions, MakeDemoResult } from './demo/make_model.js';
