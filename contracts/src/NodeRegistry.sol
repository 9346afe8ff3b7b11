// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @notice What registration tells the Settlement contract: warm the node's claim word (see Settlement.claimedEpochs).
interface IClaimWords {
    function warmClaimWord(address node) external;
}

/// @notice Edge nodes register their address with a stake. Leaving takes an unbonding delay, during which the stake
/// can still be slashed for misbehaviour proven before or while it unbonds. Only SLASHER_ROLE (the Settlement
/// contract, which checks the evidence) can slash.
contract NodeRegistry is AccessControl, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    bytes32 public constant SLASHER_ROLE = keccak256("SLASHER_ROLE");

    IERC20 public immutable token;
    uint256 public immutable minStake;
    uint64 public immutable unbondingDelay;

    struct Node {
        uint256 stake;
        /// 0 while active; otherwise when the stake becomes withdrawable.
        uint64 unbondsAt;
        bool registered;
    }

    mapping(address => Node) public nodes;
    /// The Settlement contract, set once by the admin after it is deployed (it is deployed after this registry).
    IClaimWords public claimWords;

    event NodeRegistered(address indexed node, uint256 stake);
    event StakeAdded(address indexed node, uint256 amount, uint256 stake);
    event UnbondingStarted(address indexed node, uint256 stake, uint64 withdrawableAt);
    event StakeWithdrawn(address indexed node, uint256 amount);
    event NodeSlashed(address indexed node, uint256 amount, uint256 remainingStake, address recipient, bytes32 indexed evidence);

    error StakeBelowMinimum(uint256 stake, uint256 minimum);
    error AlreadyRegistered(address node);
    error NotRegistered(address node);
    error AlreadyUnbonding(address node, uint64 withdrawableAt);
    error NotUnbonding(address node);
    error StillUnbonding(address node, uint64 withdrawableAt);
    error ZeroAmount();
    error ClaimWordsAlreadySet(address claimWords);

    constructor(IERC20 token_, uint256 minStake_, uint64 unbondingDelay_, address admin) {
        token = token_;
        minStake = minStake_;
        unbondingDelay = unbondingDelay_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Names the Settlement contract whose claim word each registration warms; once.
    function setClaimWords(IClaimWords claimWords_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (address(claimWords) != address(0)) revert ClaimWordsAlreadySet(address(claimWords));
        claimWords = claimWords_;
    }

    /// @notice Registers msg.sender with `stake` tokens (approve first). It also pays, once, for the fresh storage
    /// slot of its claim word in the Settlement contract, so that its first claim costs what its later ones do.
    function register(uint256 stake) external nonReentrant {
        Node storage n = nodes[msg.sender];
        if (n.registered) revert AlreadyRegistered(msg.sender);
        if (stake < minStake || stake == 0) revert StakeBelowMinimum(stake, minStake);
        n.registered = true;
        n.stake = stake;
        n.unbondsAt = 0;
        emit NodeRegistered(msg.sender, stake);
        if (address(claimWords) != address(0)) claimWords.warmClaimWord(msg.sender);
        token.safeTransferFrom(msg.sender, address(this), stake);
    }

    function addStake(uint256 amount) external nonReentrant {
        Node storage n = nodes[msg.sender];
        if (!n.registered) revert NotRegistered(msg.sender);
        if (n.unbondsAt != 0) revert AlreadyUnbonding(msg.sender, n.unbondsAt);
        if (amount == 0) revert ZeroAmount();
        n.stake += amount;
        emit StakeAdded(msg.sender, amount, n.stake);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Stops being active; the stake is withdrawable after `unbondingDelay` (and slashable until then).
    function startUnbonding() external {
        Node storage n = nodes[msg.sender];
        if (!n.registered) revert NotRegistered(msg.sender);
        if (n.unbondsAt != 0) revert AlreadyUnbonding(msg.sender, n.unbondsAt);
        n.unbondsAt = uint64(block.timestamp) + unbondingDelay;
        emit UnbondingStarted(msg.sender, n.stake, n.unbondsAt);
    }

    function withdrawStake() external nonReentrant {
        Node storage n = nodes[msg.sender];
        if (!n.registered) revert NotRegistered(msg.sender);
        if (n.unbondsAt == 0) revert NotUnbonding(msg.sender);
        if (block.timestamp < n.unbondsAt) revert StillUnbonding(msg.sender, n.unbondsAt);
        uint256 amount = n.stake;
        delete nodes[msg.sender];
        emit StakeWithdrawn(msg.sender, amount);
        if (amount > 0) token.safeTransfer(msg.sender, amount);
    }

    /// @notice Takes up to `amount` of the node's stake (all it has if less) and sends it to `recipient`.
    function slash(address node, uint256 amount, address recipient, bytes32 evidence) external onlyRole(SLASHER_ROLE) nonReentrant returns (uint256 taken) {
        Node storage n = nodes[node];
        if (!n.registered) revert NotRegistered(node);
        taken = amount < n.stake ? amount : n.stake;
        n.stake -= taken;
        emit NodeSlashed(node, taken, n.stake, recipient, evidence);
        if (taken > 0) token.safeTransfer(recipient, taken);
    }

    /// @notice Registered, not unbonding, and still holding at least the minimum stake.
    function isActive(address node) external view returns (bool) {
        Node storage n = nodes[node];
        return n.registered && n.unbondsAt == 0 && n.stake >= minStake;
    }
}
