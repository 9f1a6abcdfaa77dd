// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title ModelRegistry
/// @notice Publishes models: a name, a number of blocks and a commitment to the weights.
/// @dev A model's id is keccak256(bytes(name)). Workers check the blocks they load
///      against `weightsRoot` (see proto/types.py for the formula).
contract ModelRegistry {
    // ---------------------------------------------------------------- storage
    struct Model {
        address publisher; // who registered it; only they may deprecate it
        uint16 numBlocks; // blocks between the input and output stages
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
        bytes32 weightsRoot,
        bytes32 tokenizerHash,
        bytes32 configHash
    );
    /// @notice A model's publisher withdrew it from new nodes and jobs.
    event ModelDeprecated(bytes32 indexed modelId);

    // ----------------------------------------------------------------- errors
    /// @notice A model with this name is already registered.
    error ModelAlreadyRegistered(bytes32 modelId);
    /// @notice No model has this id.
    error ModelUnknown(bytes32 modelId);
    /// @notice Only the publisher may do this.
    error ModelNotPublisher(bytes32 modelId, address caller, address publisher);
    /// @notice The model was deprecated by its publisher.
    error ModelIsDeprecated(bytes32 modelId);
    /// @notice A model needs a name and at least one block.
    error ModelInvalid(string name, uint16 numBlocks);

    // --------------------------------------------------------------- external
    /// @notice Publish a model; its id is keccak256(bytes(name)).
    /// @return modelId the model's id
    function registerModel(
        string calldata name,
        uint16 numBlocks,
        bytes32 weightsRoot,
        bytes32 tokenizerHash,
        bytes32 configHash
    ) external returns (bytes32 modelId) {
        if (bytes(name).length == 0 || numBlocks == 0) revert ModelInvalid(name, numBlocks);
        modelId = keccak256(bytes(name));
        if (_models[modelId].publisher != address(0)) revert ModelAlreadyRegistered(modelId);
        _models[modelId] = Model(msg.sender, numBlocks, false, weightsRoot, tokenizerHash, configHash, name);
        emit ModelRegistered(modelId, msg.sender, name, numBlocks, weightsRoot, tokenizerHash, configHash);
    }

    /// @notice Stop new nodes and jobs from using a model. Only its publisher may.
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

    /// @notice The number of blocks of a live model (one storage read; used by the other contracts).
    /// @dev Reverts ModelUnknown or ModelIsDeprecated.
    function liveBlocks(bytes32 modelId) external view returns (uint16) {
        Model storage m = _models[modelId];
        if (m.publisher == address(0)) revert ModelUnknown(modelId);
        if (m.deprecated) revert ModelIsDeprecated(modelId);
        return m.numBlocks;
    }
}
