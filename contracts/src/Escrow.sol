// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @notice Trainers (or dataset publishers) deposit tokens that pay for the bytes they receive. A withdrawal is
/// requested first and paid out after `withdrawalDelay`; until then the requested amount can still be charged, so
/// bytes already served are paid even by a payer who tries to leave. Only SETTLEMENT_ROLE charges and refunds.
contract Escrow is AccessControl, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    bytes32 public constant SETTLEMENT_ROLE = keccak256("SETTLEMENT_ROLE");

    IERC20 public immutable token;
    uint64 public immutable withdrawalDelay;

    struct Account {
        uint256 balance;
        uint256 pendingWithdrawal;
        uint64 withdrawableAt;
    }

    struct Charge {
        address payer;
        uint256 amount;
    }

    mapping(address => Account) public accounts;

    event Deposited(address indexed payer, uint256 amount, uint256 balance);
    event WithdrawalRequested(address indexed payer, uint256 amount, uint64 withdrawableAt);
    event Withdrawn(address indexed payer, uint256 amount);
    event Charged(uint256 indexed epoch, address indexed payer, uint256 amount, uint256 balance);
    event Refunded(uint256 indexed epoch, address indexed payer, uint256 amount, uint256 balance);

    error ZeroAmount();
    error InsufficientEscrow(address payer, uint256 wanted, uint256 available);
    error NothingPending(address payer);
    error WithdrawalLocked(address payer, uint64 withdrawableAt);

    constructor(IERC20 token_, uint64 withdrawalDelay_, address admin) {
        token = token_;
        withdrawalDelay = withdrawalDelay_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Deposits `amount` for msg.sender (approve first).
    function deposit(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Account storage a = accounts[msg.sender];
        a.balance += amount;
        emit Deposited(msg.sender, amount, a.balance);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Moves `amount` of the balance to a pending withdrawal; a new request restarts the delay.
    function requestWithdrawal(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Account storage a = accounts[msg.sender];
        if (amount > a.balance) revert InsufficientEscrow(msg.sender, amount, a.balance);
        a.balance -= amount;
        a.pendingWithdrawal += amount;
        a.withdrawableAt = uint64(block.timestamp) + withdrawalDelay;
        emit WithdrawalRequested(msg.sender, a.pendingWithdrawal, a.withdrawableAt);
    }

    function withdraw() external nonReentrant {
        Account storage a = accounts[msg.sender];
        uint256 amount = a.pendingWithdrawal;
        if (amount == 0) revert NothingPending(msg.sender);
        if (block.timestamp < a.withdrawableAt) revert WithdrawalLocked(msg.sender, a.withdrawableAt);
        a.pendingWithdrawal = 0;
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice What can still be charged: the balance plus a withdrawal not yet paid out.
    function chargeable(address payer) public view returns (uint256) {
        Account storage a = accounts[payer];
        return a.balance + a.pendingWithdrawal;
    }

    /// @notice Debits each payer (balance first, then the pending withdrawal) and sends the sum to the caller.
    function charge(uint256 epoch, Charge[] calldata charges) external onlyRole(SETTLEMENT_ROLE) nonReentrant returns (uint256 sum) {
        for (uint256 i = 0; i < charges.length; i++) {
            Charge calldata c = charges[i];
            Account storage a = accounts[c.payer];
            uint256 available = a.balance + a.pendingWithdrawal;
            if (c.amount > available) revert InsufficientEscrow(c.payer, c.amount, available);
            if (c.amount <= a.balance) {
                a.balance -= c.amount;
            } else {
                a.pendingWithdrawal -= c.amount - a.balance;
                a.balance = 0;
            }
            sum += c.amount;
            emit Charged(epoch, c.payer, c.amount, a.balance);
        }
        if (sum > 0) token.safeTransfer(msg.sender, sum);
    }

    /// @notice Credits back the charges of a voided epoch; the caller sends the tokens (pulled here).
    function refund(uint256 epoch, Charge[] calldata charges) external onlyRole(SETTLEMENT_ROLE) nonReentrant {
        uint256 sum;
        for (uint256 i = 0; i < charges.length; i++) {
            Account storage a = accounts[charges[i].payer];
            a.balance += charges[i].amount;
            sum += charges[i].amount;
            emit Refunded(epoch, charges[i].payer, charges[i].amount, a.balance);
        }
        if (sum > 0) token.safeTransferFrom(msg.sender, address(this), sum);
    }
}
