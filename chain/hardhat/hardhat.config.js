// The Hardhat network of `tessera chain up --engine hardhat`: chain id 31337 and
// the same dev accounts as anvil (Hardhat's defaults); contracts come from forge.
import { defineConfig } from "hardhat/config";

export default defineConfig({});
