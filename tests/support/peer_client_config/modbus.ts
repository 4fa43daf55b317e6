// locker-console test stand-in (see README.md): serial settings of the relay bus.
import { configLoader } from "./configLoader";

export function getModbusConfig() {
  const m = configLoader.loadConfig().modbus;
  return {
    connection: {
      port: m.port,
      baudRate: m.baudRate || 9600,
      dataBits: (m.dataBits || 8) as 7 | 8,
      stopBits: (m.stopBits || 1) as 1 | 2,
      parity: (m.parity || "none") as "none" | "even" | "odd",
      timeout: m.timeout || 1000,
    },
  };
}
