// The firewall's audit log (README.md): the AuditLog, its record schema and its file names.
export * from "./audit-log.js";
export * from "./audit-record.js";
export { auditFileName, listAuditFiles } from "./audit-files.js";
