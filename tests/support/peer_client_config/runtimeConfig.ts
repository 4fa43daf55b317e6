// locker-console test stand-in (see README.md): the server-managed overlay (heartbeat
// interval, compartment mapping) that apply_config writes, and the hash the client verifies.
import { createHash } from "crypto";
import fs from "fs";
import { RUNTIME_CONFIG_OVERLAY_FILE } from "./paths";
import type { CompartmentConfig, LockerConfig } from "./configLoader";

const HIGHEST_RELAY = 7;

export interface RuntimeConfigOverlay {
  mqtt?: { heartbeatInterval?: number };
  compartments?: CompartmentConfig[];
  appliedConfigHash?: string;
  updatedAt?: string;
}

const positive = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0;
const nonNegative = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0;

export function normalizeCompartments(list: CompartmentConfig[]): CompartmentConfig[] {
  return list
    .map((c) => ({ compartment_number: c.compartment_number, slaveId: c.slaveId, address: c.address }))
    .sort((a, b) => a.compartment_number - b.compartment_number);
}

export function computeAppliedConfigHash(list: CompartmentConfig[]): string {
  return createHash("sha256").update(JSON.stringify(normalizeCompartments(list))).digest("hex");
}

export function sanitizeRuntimeConfigOverlay(value: unknown): RuntimeConfigOverlay {
  if (value === null || typeof value !== "object") {
    throw new Error("runtime config overlay must be an object");
  }
  const raw = value as Record<string, any>;
  const out: RuntimeConfigOverlay = {};
  if (raw.mqtt !== undefined) {
    if (raw.mqtt === null || typeof raw.mqtt !== "object") {
      throw new Error("runtime overlay mqtt config must be an object");
    }
    if (raw.mqtt.heartbeatInterval !== undefined) {
      if (!positive(raw.mqtt.heartbeatInterval)) {
        throw new Error("runtime overlay mqtt.heartbeatInterval must be a positive integer");
      }
      out.mqtt = { heartbeatInterval: raw.mqtt.heartbeatInterval };
    }
  }
  if (raw.compartments !== undefined) {
    if (!Array.isArray(raw.compartments)) {
      throw new Error("runtime overlay compartments must be an array");
    }
    out.compartments = normalizeCompartments(
      raw.compartments.map((c: any) => {
        if (
          c === null || typeof c !== "object" || !positive(c.compartment_number) ||
          !positive(c.slaveId) || !nonNegative(c.address) || c.address > HIGHEST_RELAY
        ) {
          throw new Error("runtime overlay contains an invalid compartment entry");
        }
        return { compartment_number: c.compartment_number, slaveId: c.slaveId, address: c.address };
      }),
    );
  }
  if (raw.appliedConfigHash !== undefined) {
    if (typeof raw.appliedConfigHash !== "string" || !/^[a-f0-9]{64}$/i.test(raw.appliedConfigHash)) {
      throw new Error("runtime overlay appliedConfigHash must be a 64 character hex string");
    }
    out.appliedConfigHash = raw.appliedConfigHash;
  }
  if (raw.updatedAt !== undefined) {
    if (typeof raw.updatedAt !== "string" || Number.isNaN(Date.parse(raw.updatedAt))) {
      throw new Error("runtime overlay updatedAt must be an ISO date string");
    }
    out.updatedAt = raw.updatedAt;
  }
  return out;
}

export function loadRuntimeConfigOverlay(): RuntimeConfigOverlay | null {
  try {
    if (!fs.existsSync(RUNTIME_CONFIG_OVERLAY_FILE)) return null;
    const text = fs.readFileSync(RUNTIME_CONFIG_OVERLAY_FILE, "utf8").trim();
    return text ? sanitizeRuntimeConfigOverlay(JSON.parse(text)) : null;
  } catch {
    return null;
  }
}

export function saveRuntimeConfigOverlay(overlay: RuntimeConfigOverlay): RuntimeConfigOverlay {
  const clean = sanitizeRuntimeConfigOverlay(overlay);
  fs.writeFileSync(RUNTIME_CONFIG_OVERLAY_FILE, JSON.stringify(clean, null, 2), "utf8");
  return clean;
}

export function clearRuntimeConfigOverlay(): void {
  if (fs.existsSync(RUNTIME_CONFIG_OVERLAY_FILE)) fs.unlinkSync(RUNTIME_CONFIG_OVERLAY_FILE);
}

export function mergeRuntimeConfig(
  base: LockerConfig,
  overlay: RuntimeConfigOverlay | null,
): LockerConfig {
  if (!overlay) return base;
  return {
    ...base,
    mqtt: {
      ...(base.mqtt ?? {}),
      heartbeatInterval: overlay.mqtt?.heartbeatInterval ?? base.mqtt?.heartbeatInterval,
    },
    compartments: overlay.compartments ?? base.compartments,
  };
}
