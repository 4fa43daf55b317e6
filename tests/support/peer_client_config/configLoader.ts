// locker-console test stand-in (see README.md): CONFIG_DIR/locker-config.yml merged with
// the runtime overlay.
import fs from "fs";
import { load } from "js-yaml";
import { CONFIG_FILE } from "./paths";
import { loadRuntimeConfigOverlay, mergeRuntimeConfig } from "./runtimeConfig";

export interface CompartmentConfig {
  compartment_number: number;
  slaveId: number;
  address: number;
}

export interface LockerConfig {
  mqtt?: {
    heartbeatInterval?: number;
    cleanSession?: boolean;
    keepaliveSeconds?: number;
    reconnectPeriodMs?: number;
    connectTimeoutMs?: number;
    maxReconnectAttempts?: number;
  };
  modbus: {
    port: string;
    flashDurationMs?: number;
    baudRate?: number;
    dataBits?: 7 | 8;
    stopBits?: 1 | 2;
    parity?: "none" | "even" | "odd";
    timeout?: number;
  };
  compartments?: CompartmentConfig[];
}

class ConfigLoader {
  private config: LockerConfig | null = null;
  private explicitRuntimeCompartments = false;

  loadConfig(): LockerConfig {
    if (this.config) return this.config;
    if (!fs.existsSync(CONFIG_FILE)) {
      throw new Error(`Configuration file not found: ${CONFIG_FILE}`);
    }
    const parsed = ((load(fs.readFileSync(CONFIG_FILE, "utf8")) as LockerConfig) ?? {}) as LockerConfig;
    parsed.mqtt = parsed.mqtt ?? {};
    if (!parsed.modbus?.port) {
      throw new Error("modbus.port is required in configuration");
    }
    const overlay = loadRuntimeConfigOverlay();
    this.explicitRuntimeCompartments = overlay?.compartments !== undefined;
    this.config = mergeRuntimeConfig(parsed, overlay);
    return this.config;
  }

  getConfig(): LockerConfig | null {
    return this.config;
  }

  reloadConfig(): LockerConfig {
    this.config = null;
    this.explicitRuntimeCompartments = false;
    return this.loadConfig();
  }

  hasExplicitRuntimeCompartmentsConfig(): boolean {
    if (!this.config) this.loadConfig();
    return this.explicitRuntimeCompartments;
  }

  getCompartmentConfig(number: number): CompartmentConfig | null {
    return this.config?.compartments?.find((c) => c.compartment_number === number) ?? null;
  }
}

export const configLoader = new ConfigLoader();
