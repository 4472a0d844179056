// What a page may ask of the lab, checked before anything is done. Anything
// else, or a value out of range, is an InputError: the page shows its message.
import {
  checkClientSettings,
  checkFlag,
  checkMode,
  type ClientSettings,
  type Flag,
  InputError,
  type Mode,
} from "./settings.ts";
import { type Preset, PRESETS } from "./presets.ts";

export type Request =
  | { type: "add"; count: number; clients: ClientSettings }
  | { type: "setting"; mode: Mode; flag: Flag; value: number | null }
  | { type: "work"; value: number }
  | { type: "preset"; preset: Preset }
  | { type: "clear" };

const ADD_COUNTS = [1, 5, 20];
const MAX_REQUEST = 1000; // characters: every request is much shorter

export function parseRequest(data: unknown): Request {
  if (typeof data !== "string" || data.length > MAX_REQUEST) {
    throw new InputError("a request must be a short JSON text");
  }
  let request: Record<string, unknown>;
  try {
    request = JSON.parse(data);
  } catch {
    throw new InputError("a request must be JSON");
  }
  if (typeof request !== "object" || request === null) {
    throw new InputError("a request must be a JSON object");
  }
  switch (request.type) {
    case "add":
      if (!ADD_COUNTS.includes(request.count as number)) {
        throw new InputError(`add ${ADD_COUNTS.join(", ")} clients at a time`);
      }
      return {
        type: "add",
        count: request.count as number,
        clients: checkClientSettings(request),
      };
    case "setting": {
      const mode = checkMode(request.mode);
      if (request.flag === "work") {
        throw new InputError("--work is set for every panel at once");
      }
      return {
        type: "setting",
        mode,
        ...checkFlag(mode, request.flag, request.value),
      };
    }
    case "work": {
      const { value } = checkFlag("serial", "work", request.value);
      return { type: "work", value: value ?? 0 };
    }
    case "preset": {
      const preset = PRESETS.find((p) => p.name === request.name);
      if (!preset) {
        throw new InputError(`no preset ${JSON.stringify(request.name)}`);
      }
      return { type: "preset", preset };
    }
    case "clear":
      return { type: "clear" };
    default:
      throw new InputError(`unknown request ${JSON.stringify(request.type)}`);
  }
}
