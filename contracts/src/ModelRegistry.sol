// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title ModelRegistry
/// @notice Publishes models: a name under its publisher, a number of blocks, a context length and a
///         commitment to the weights.
/// @dev A model's id is keccak256(abi.encode(publisher, name)): anyone may publish any name, but
///      only under their own address, so a name cannot be squatted. Workers check the blocks they
///      load against `weightsRoot` (see proto/types.py for the formula).
///      Deprecation: the publisher may deprecate at any time and cannot undo it; it stops new jobs
///      and new node registrations for the model; open jobs run and settle normally and registered
///      nodes unbond as usual.
contract ModelRegistry {
    // -------------------------------------------------------------- constants
    uint256 public constant MAX_NAME_BYTES = 64;

    // ---------------------------------------------------------------- storage
    struct Model {
        address publisher; // who registered it; only they may deprecate it
        uint16 numBlocks; // blocks between the input and output stages
        uint32 contextLength; // tokens the model attends over (prompt + generated); 1 for a classifier
        bool deprecated; // no new nodes or jobs once set
        bytes32 weightsRoot; // keccak(h_input || h_block_0.. || h_output)
        bytes32 tokenizerHash; // keccak of the tokenizer files
        bytes32 configHash; // keccak of the model config
        string name;
    }

    mapping(bytes32 => Model) private _models;

    // ----------------------------------------------------------------- events
    /// @notice A model was published.
    event ModelRegistered(
        bytes32 indexed modelId,
        address indexed publisher,
        string name,
        uint16 numBlocks,
        uint32 contextLength,
        bytes32 weightsRoot,
        bytes32 tokenizerHash,
        bytes32 configHash
    );
    /// @notice A model's publisher withdrew it from new nodes and jobs.
    event ModelDeprecated(bytes32 indexed modelId);

    // ----------------------------------------------------------------- errors
    /// @notice This publisher already registered a model with this name.
    error ModelAlreadyRegistered(bytes32 modelId);
    /// @notice No model has this id.
    error ModelUnknown(bytes32 modelId);
    /// @notice Only the publisher may do this.
    error ModelNotPublisher(bytes32 modelId, address caller, address publisher);
    /// @notice The model was deprecated by its publisher.
    error ModelIsDeprecated(bytes32 modelId);
    /// @notice A model needs a name of 1-64 bytes without '/', at least one block and a context length.
    error ModelInvalid(string name, uint16 numBlocks, uint32 contextLength);

    // --------------------------------------------------------------- external
    /// @notice Publish a model under msg.sender.
    /// @return modelId keccak256(abi.encode(msg.sender, name))
    function registerModel(
        string calldata name,
        uint16 numBlocks,
        uint32 contextLength,
        bytes32 weightsRoot,
        bytes32 tokenizerHash,
        bytes32 configHash
    ) external returns (bytes32 modelId) {
        if (!_validName(bytes(name)) || numBlocks == 0 || contextLength == 0) {
            revert ModelInvalid(name, numBlocks, contextLength);
        }
        modelId = modelIdOf(msg.sender, name);
        if (_models[modelId].publisher != address(0)) revert ModelAlreadyRegistered(modelId);
        _models[modelId] =
            Model(msg.sender, numBlocks, contextLength, false, weightsRoot, tokenizerHash, configHash, name);
        emit ModelRegistered(
            modelId, msg.sender, name, numBlocks, contextLength, weightsRoot, tokenizerHash, configHash
        );
    }

    /// @notice Stop new nodes and jobs from using a model (irreversible). Only its publisher may.
    function deprecate(bytes32 modelId) external {
        Model storage m = _models[modelId];
        if (m.publisher == address(0)) revert ModelUnknown(modelId);
        if (m.publisher != msg.sender) revert ModelNotPublisher(modelId, msg.sender, m.publisher);
        m.deprecated = true;
        emit ModelDeprecated(modelId);
    }

    /// @notice The full record of a model; reverts ModelUnknown if absent.
    function getModel(bytes32 modelId) external view returns (Model memory) {
        Model memory m = _models[modelId];
        if (m.publisher == address(0)) revert ModelUnknown(modelId);
        return m;
    }

    /// @notice Blocks and context length of a live model (one storage read; used by the other contracts).
    /// @dev Reverts ModelUnknown or ModelIsDeprecated.
    function liveModel(bytes32 modelId) external view returns (uint16 numBlocks, uint32 contextLength) {
        Model storage m = _models[modelId];
        if (m.publisher == address(0)) revert ModelUnknown(modelId);
        if (m.deprecated) revert ModelIsDeprecated(modelId);
        return (m.numBlocks, m.contextLength);
    }

    /// @notice The id of `name` published by `publisher`.
    function modelIdOf(address publisher, string calldata name) public pure returns (bytes32) {
        return keccak256(abi.encode(publisher, name));
    }

    // --------------------------------------------------------------- internal
    function _validName(bytes calldata name) internal pure returns (bool) {
        if (name.length == 0 || name.length > MAX_NAME_BYTES) return false;
        for (uint256 i; i < name.length; ++i) {
            if (name[i] == "/") return false;
        }
        return true;
    }
}
