// locker-console test stand-in (see README.md): broker URL, bootstrap credentials and
// client id from the environment, persisted credentials, transport settings.
import fs from "fs";
import { randomBytes } from "crypto";
import { credentialsService } from "../services/credentialsService";
import { logger } from "../helper/logger";
import { configLoader, type LockerConfig } from "./configLoader";
import { MQTT_CLIENT_ID_FILE } from "./paths";

export type MqttTransportSettings = {
  clean: boolean;
  keepalive: number;
  reconnectPeriod: number;
  connectTimeout: number;
  maxReconnectAttempts: number;
};

function clientId(): string {
  if (process.env.MQTT_CLIENT_ID) return process.env.MQTT_CLIENT_ID;
  try {
    if (fs.existsSync(MQTT_CLIENT_ID_FILE)) {
      const stored = fs.readFileSync(MQTT_CLIENT_ID_FILE, "utf-8").trim();
      if (stored) return stored;
    }
  } catch {
    // fall through: a new one
  }
  const fresh = `locker-client-${randomBytes(4).toString("hex")}`;
  try {
    fs.writeFileSync(MQTT_CLIENT_ID_FILE, fresh, "utf-8");
  } catch {
    // not persisted: a new id next time
  }
  return fresh;
}

function envInt(name: string): number | undefined {
  const raw = process.env[name]?.trim();
  if (!raw) return undefined;
  const n = Number.parseInt(raw, 10);
  return Number.isFinite(n) ? n : undefined;
}

function envBool(name: string): boolean | undefined {
  const raw = process.env[name]?.trim().toLowerCase();
  if (raw === "true" || raw === "1" || raw === "yes") return true;
  if (raw === "false" || raw === "0" || raw === "no") return false;
  return undefined;
}

function transport(file: LockerConfig["mqtt"]): MqttTransportSettings {
  const m = file ?? {};
  return {
    clean: envBool("MQTT_CLEAN_SESSION") ?? m.cleanSession ?? false,
    keepalive: Math.max(0, envInt("MQTT_KEEPALIVE_SECONDS") ?? m.keepaliveSeconds ?? 60),
    reconnectPeriod: Math.max(0, envInt("MQTT_RECONNECT_PERIOD_MS") ?? m.reconnectPeriodMs ?? 5000),
    connectTimeout: Math.max(0, envInt("MQTT_CONNECT_TIMEOUT_MS") ?? m.connectTimeoutMs ?? 30000),
    maxReconnectAttempts: Math.max(0, envInt("MQTT_MAX_RECONNECT_ATTEMPTS") ?? m.maxReconnectAttempts ?? 0),
  };
}

export function getMqttTransportSettings(): MqttTransportSettings {
  return transport(configLoader.loadConfig().mqtt);
}

export function getMqttConfig() {
  const missing = ["MQTT_DEFAULT_USERNAME", "MQTT_DEFAULT_PASSWORD"].filter(
    (name) => !process.env[name]?.trim(),
  );
  if (missing.length > 0) {
    throw new Error(`Missing required MQTT environment variables: ${missing.join(", ")}`);
  }
  const config = configLoader.loadConfig();
  const stored = credentialsService.getCredentials();
  return {
    brokerUrl: process.env.MQTT_BROKER_URL?.trim() || "mqtt://localhost:1883",
    defaultUsername: process.env.MQTT_DEFAULT_USERNAME!.trim(),
    defaultPassword: process.env.MQTT_DEFAULT_PASSWORD!.trim(),
    ...(stored ?? {}),
    clientId: clientId(),
    heartbeatInterval: (config.mqtt?.heartbeatInterval ?? 15) * 1000,
    mqttTransport: transport(config.mqtt),
  };
}

export function logCurrentMqttConfig(): void {
  const c = getMqttConfig();
  logger.debug("MQTT configuration loaded:", {
    brokerUrl: c.brokerUrl,
    clientId: c.clientId,
    heartbeatInterval: c.heartbeatInterval,
    cleanSession: c.mqttTransport.clean,
  });
}
