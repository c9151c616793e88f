export { PrivateDocker, startPrivateDocker, DEFAULT_ADDRESS_POOL, DEFAULT_BRIDGE_CIDR } from "./docker.js";
export type { AfterHook, PrivateDockerOptions } from "./docker.js";
export { NetnsProcess, runInNetns, netnsPath, addNetns, deleteNetns } from "./netns.js";
export type { NetnsProcessOptions, NetnsRef, ProcessExit, RunInNetnsOptions } from "./netns.js";
export { findLeftovers, isAlive, isClean, mountsUnder } from "./leftovers.js";
export type { Leftovers, RunRef, StrayProcess } from "./leftovers.js";
export {
  busyboxImage,
  nodeImage,
  importRootfs,
  busyboxEntries,
  nodeEntries,
  sharedLibraries,
  hasImage,
  NODE_BINARY,
  NODE_IN_IMAGE,
  REPO_ROOT,
} from "./images.js";
export type { ImportResult, NodeImageOptions } from "./images.js";
export { treeEntries, type RootfsEntry, type TreeOptions } from "./rootfs-tar.js";
export { runContainer, demux } from "./containers.js";
export type { RunContainerOptions, RunContainerResult } from "./containers.js";
export { mintTestTrust, useTestTrust, type TestTrust } from "./trust.js";
export { requires, root, command, cgroup2, bpffs, isCI, cgroup2Mount, bpffsMount } from "./preconditions.js";
export { waitFor, type WaitForOptions } from "./wait-for.js";
export { removeCgroupParent } from "./cgroups.js";
export { wireError, type WireError, type WireStatus } from "./wire-error.js";
